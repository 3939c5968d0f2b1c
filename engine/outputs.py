"""The one atomic writer for every file hsbulk writes.

Results, rejects, normalised values, summaries, export parts and manifests all go through
`Output` (or the `open_output`, `write_frame` and `write_json` shortcuts). Where an output
goes depends on what its path is:

* `-` (`STDOUT`): standard output; nothing is created.
* a FIFO or a character device (`/dev/stdout`, `/dev/null`, a named pipe): opened and
  written in place, never renamed over.
* a symlink: followed; its target is replaced as below and the link is kept.
* a regular file or a new name: written to a temp file in the same folder, fsynced,
  renamed over the target, the folder fsynced: a reader sees the old file or the whole
  new one, never half of it, and a failed run leaves the old file as it was.
* anything else (a folder, a socket): a `ConfigError`.

Files are created 0600 and the folders hsbulk creates 0700, whatever the umask (as the
journal). CSV cells that a spreadsheet would run as a formula (first character `=`, `+`,
`-`, `@`, tab, CR or LF) get a leading `'` unless `escape_formulas=False`; Parquet and
NDJSON carry the raw values.

Every command calls `refuse_inputs` before anything is written or sent: an output that is
one of the run's inputs (the same file by path or inode, or a name an input glob matches),
two outputs that are one file, or two outputs on standard output are a `ConfigError`.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal

import orjson
import polars as pl

from engine.errors import ConfigError

STDOUT = Path("-")
FORMULA_START = r"^[=+\-@\t\r\n]"
ESCAPED_FORMULA_START = r"^'[=+\-@\t\r\n]"
WRITTEN_BY_HSBULK = "hsbulk_source_row"  # a CSV with this column is a rejects file of ours

Format = Literal["csv", "parquet", "ndjson"]
_FORMATS: dict[str, Format] = {".csv": "csv", ".txt": "csv", ".parquet": "parquet",
                               ".pq": "parquet", ".ndjson": "ndjson", ".jsonl": "ndjson"}


def is_stdout(path: Path | str | None) -> bool:
    return path is not None and str(path) == "-"


def uses_stdout(*paths: Path | str | None) -> bool:
    """Whether any of `paths` is `-` or the file stdout writes to (`/dev/stdout`): the
    human report then goes to stderr."""
    try:
        out = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # a captured or replaced stdout
        out = None
    for path in paths:
        if path is None:
            continue
        if is_stdout(path):
            return True
        try:
            found = os.stat(path) if out is not None else None
        except OSError:
            continue
        if found is not None and out is not None and (found.st_dev, found.st_ino) == (
                out.st_dev, out.st_ino):
            return True
    return False


def file_format(path: Path) -> Format:
    """CSV, Parquet or NDJSON by extension; CSV for anything else (and for stdout)."""
    return _FORMATS.get(path.suffix.lower(), "csv")


# -- formulas ---------------------------------------------------------------------------


def escape_expr(name: str) -> pl.Expr:
    """A text cell that a spreadsheet would run as a formula gets a leading `'`."""
    e = pl.col(name)
    return (pl.when(e.str.contains(FORMULA_START)).then(pl.lit("'") + e).otherwise(e)
            .alias(name))


def unescape_expr(name: str) -> pl.Expr:
    """The inverse of `escape_expr`: for reading back a CSV file hsbulk wrote."""
    e = pl.col(name)
    return (pl.when(e.str.contains(ESCAPED_FORMULA_START)).then(e.str.slice(1)).otherwise(e)
            .alias(name))


def escape_formulas(frame: pl.DataFrame) -> pl.DataFrame:
    """`escape_expr` over every text column of `frame`."""
    text = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    return frame.with_columns(escape_expr(name) for name in text) if text else frame


# -- folders and files ------------------------------------------------------------------


def make_folder(folder: Path) -> None:
    """Create `folder` and any missing parent 0700 (`mkdir -p` would use the umask)."""
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for item in reversed(missing):
        try:
            item.mkdir(mode=0o700)
        except FileExistsError:
            continue
        except OSError as exc:
            raise ConfigError(f"cannot create folder {item}: {exc.strerror}") from None
        os.chmod(item, 0o700)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Output:
    """One output file being written: write to `handle`, then `close()` (in place) or
    `discard()` (a failed write: the old file stays; a pipe keeps what it got)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.target: Path | None = None  # the regular file that `close` replaces
        self._temp: Path | None = None
        self.handle: IO[bytes]
        if is_stdout(path):
            sys.stdout.flush()
            self.handle = sys.stdout.buffer
            return
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            mode = None
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
        if mode is not None and (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
            self.handle = self._open(path, os.O_WRONLY)
            return
        if mode is not None and str(path.absolute()).startswith(("/dev/", "/proc/")):
            # /dev/stdout, /dev/fd/N redirected to a file: append in place, as the shell's
            # own writes do (a rename would leave the shell writing to an unlinked file)
            self.handle = self._open(path, os.O_WRONLY | os.O_APPEND)
            return
        if mode is not None and not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
            raise ConfigError(f"cannot write {path}: it is {kind}")
        self.target = Path(os.path.realpath(path))  # a symlink: replace its target
        make_folder(self.target.parent)
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".tmp",
                                        dir=self.target.parent)  # 0600
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
        self._temp = Path(temp)
        self.handle = os.fdopen(fd, "wb")

    def _open(self, path: Path, flags: int) -> IO[bytes]:
        try:
            return os.fdopen(os.open(path, flags), "wb")
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror}") from None

    @property
    def folder(self) -> Path | None:
        """The folder of the file being replaced (None for stdout, pipes and devices)."""
        return None if self.target is None else self.target.parent

    def close(self) -> None:
        """Put the output in place: flush, and for a file fsync, rename, fsync the folder."""
        try:
            self.handle.flush()
            if self._temp is None or self.target is None:
                if not is_stdout(self.path):
                    self.handle.close()
                return
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self._temp, self.target)
            self._temp = None
            _fsync(self.target.parent)
        except OSError as exc:
            self.discard()
            raise ConfigError(f"cannot write {self.path}: {exc.strerror}") from None

    def discard(self) -> None:
        """Drop a half-written output (the file it would have replaced is untouched)."""
        if not is_stdout(self.path) and not self.handle.closed:
            self.handle.close()
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None


@contextmanager
def open_output(path: Path) -> Iterator[IO[bytes]]:
    """`with open_output(path) as handle:` write bytes; in place on success only."""
    output = Output(path)
    try:
        yield output.handle
    except BaseException:
        output.discard()
        raise
    output.close()


def write_frame(path: Path, frame: pl.DataFrame, *, fmt: Format | None = None,
                escape: bool = True, line_terminator: str = "\n") -> None:
    """Write `frame` to `path` as CSV, Parquet or NDJSON (`fmt`, else by extension).

    `escape`: CSV text cells that look like formulas get a leading `'` (Parquet and NDJSON
    stay raw). `line_terminator="\\r\\n"` for RFC 4180 CSV (export parts).
    """
    kind = fmt or file_format(path)
    if kind == "csv" and escape:
        frame = escape_formulas(frame)
    try:
        with open_output(path) as handle:
            if kind == "parquet":
                frame.write_parquet(handle)
            elif kind == "ndjson":
                frame.write_ndjson(handle)
            else:
                frame.write_csv(handle, line_terminator=line_terminator)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


def write_json(path: Path, body: Any) -> None:
    """`body` as indented JSON (and a final newline) to `path`."""
    try:
        with open_output(path) as handle:
            handle.write(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


# -- inputs versus outputs ----------------------------------------------------------------


def _is_pattern(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _names_one_file(output: Path, item: str) -> bool:
    """Whether `output` is the input `item` (a path or a glob): same file, same resolved
    name, or a name the glob matches (the next run would read it)."""
    real = os.path.realpath(output)
    if _is_pattern(item):
        pattern = os.path.abspath(item)
        if fnmatch.fnmatchcase(real, pattern) or fnmatch.fnmatchcase(
                os.path.abspath(output), pattern):
            return True
        return any(_same_file(output, Path(p)) for p in glob.glob(item, recursive=True))
    return real == os.path.realpath(item) or _same_file(output, Path(item))


def refuse_inputs(outputs: Iterable[Path | None], inputs: Iterable[Path | str | None]) -> None:
    """`ConfigError` when an output would overwrite an input or another output.

    Call before anything is written or sent. `-` (stdout) may be named once; FIFOs and
    devices (`/dev/null`, `/dev/stdout`) are never inputs of a run and are let through.
    """
    wanted = [Path(p) for p in outputs if p is not None]
    sources = [str(p) for p in inputs if p is not None]
    if sum(1 for p in wanted if is_stdout(p)) > 1:
        raise ConfigError("only one output can be written to standard output (-)")
    files = [p for p in wanted if not is_stdout(p) and not _is_device(p)]
    for output in files:
        for item in sources:
            if _names_one_file(output, item):
                raise ConfigError(f"output {output} is the input {item}: it would be "
                                  "overwritten; write it somewhere else")
    for i, output in enumerate(files):
        for other in files[i + 1:]:
            if _names_one_file(output, str(other)):
                raise ConfigError(f"outputs {output} and {other} are the same file")


def _is_device(path: Path) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)
