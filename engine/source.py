"""Input files -> batches of raw text with source row numbers, after strict file checks.

Every value is read as text (`01234` stays `01234`). A source is one file or a glob of
files read in sorted order as one input; `source_row` is the 1-based data row, continuing
across files, and stable across runs.

    source = open_source(SourceSpec("contacts.csv"))
    source.columns                    # header names
    source.fingerprint()              # for checkpoints: changes when the input changes
    for batch in source.batches():    # pl.DataFrame: source_row (Int64) + String columns
        ...
    source.stats                      # rows read, blank rows skipped

CSV checks (a `SourceError` naming file, row, column and byte offset): duplicate or empty
header names, rows with more or fewer fields than the header, invalid UTF-8 (unless
`encoding_errors="replace"`), an unterminated quoted field, a field longer than
`max_field_chars`. They run in a streaming pre-scan of the file's lines in polars (one
count of quotes and delimiters per line; Python looks only at the few suspicious records),
before the first batch is yielded. Blank lines (and rows whose every field is empty) carry
no data: they are skipped and counted in `stats.blank_rows`.

CSV files are read in blocks of a few MB cut at record ends (`_blocks`), each parsed by
polars with the same options as a scan of the whole file: memory stays bounded by the block
and batch sizes (polars' streaming CSV scan reads hundreds of MB ahead of its consumer).
Lines end with LF (a CR before it is not data), or with CR alone in a file that has no LF
in its first MB (old Mac files; a LF found later refuses the file). A NUL byte in a field is
read as is: normalisation rejects that row (INVALID_CHARACTER, naming row and column).

NDJSON: every value is read as text, never through a schema inferred from the first rows:
strings as they are, numbers as written (`1.50`, 20-digit integers), booleans `true`/`false`,
objects and arrays as their JSON text. Opening the file reads every line once (its columns
are the keys of all lines, in the order first seen): a line that is not one JSON object
refuses the file before anything is sent (`SourceError` with row and byte offset). Parquet
columns are turned into text by type (`_as_text`).

The input is read as it was fingerprinted: `fingerprint()` (also taken when the source is
opened) fixes how many bytes of each file are read, so rows appended while a run reads the
file are left for the next run (whose fingerprint covers them). A file rewritten in place is
fingerprinted again before the next read. Any failure to read (permissions, I/O, a folder or
a pipe given as input) is a `SourceError` naming the file (and the row, mid-file).
"""

from __future__ import annotations

import array
import codecs
import glob as globbing
import hashlib
import io
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import msgspec
import polars as pl

from engine.errors import SourceError
from engine.outputs import WRITTEN_BY_HSBULK, unescape_expr

SOURCE_ROW = "source_row"
MAX_FIELD_CHARS = 65_536
_HEAD_BYTES = 1 << 20
_BLOCK_BYTES = 4 << 20
_HASH_BYTES = 1 << 16

SourceFormat = Literal["csv", "parquet", "ndjson", "frame"]
_FORMATS: dict[str, SourceFormat] = {".csv": "csv", ".txt": "csv", ".tsv": "csv",
                                     ".parquet": "parquet", ".pq": "parquet",
                                     ".ndjson": "ndjson", ".jsonl": "ndjson"}


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """Where and how to read the input (CLI: SOURCE, --delimiter, --encoding-errors)."""

    path: str
    format: SourceFormat | None = None
    delimiter: str = ","
    quote_char: str = '"'
    encoding_errors: Literal["strict", "replace"] = "strict"
    chunk_rows: int = 50_000
    max_field_chars: int | None = MAX_FIELD_CHARS
    frame: FrameInput | None = field(default=None, compare=False, repr=False)  # not a file

    def __post_init__(self) -> None:
        if len(self.delimiter.encode()) != 1 or self.delimiter in "\r\n" + self.quote_char:
            raise SourceError(f"delimiter {self.delimiter!r} must be one single-byte character "
                              "other than a quote or a line break")
        if self.encoding_errors not in ("strict", "replace"):
            raise SourceError("encoding errors must be 'strict' or 'replace'")
        if self.chunk_rows < 1:
            raise SourceError("chunk rows must be positive")


@dataclass(frozen=True, slots=True)
class FileFingerprint:
    path: str
    size: int
    mtime_ns: int
    sample_sha256: str


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """Size, mtime and a hash of the head and tail of every file, and one digest of all."""

    files: tuple[FileFingerprint, ...]

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for f in self.files:
            h.update(f"{f.path}\0{f.size}\0{f.mtime_ns}\0{f.sample_sha256}\n".encode())
        return h.hexdigest()


@dataclass(slots=True)
class SourceStats:
    rows_read: int = 0
    blank_rows: int = 0


def _sample_sha256(path: Path, size: int) -> str:
    """A hash of the head and the tail of the first `size` bytes of `path` (bytes written
    after them are never looked at: a file that only grew keeps its sample)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        h.update(f.read(min(size, _HASH_BYTES)))
        if size > 2 * _HASH_BYTES:
            f.seek(size - _HASH_BYTES)
        h.update(f.read(max(0, min(size - f.tell(), _HASH_BYTES))))
    return h.hexdigest()


def _file_fingerprint(path: Path) -> FileFingerprint:
    try:
        info = path.stat()
        return FileFingerprint(str(path), info.st_size, info.st_mtime_ns,
                               _sample_sha256(path, info.st_size))
    except OSError as exc:
        raise _unreadable(path, exc) from None


def _holds(fingerprint: FileFingerprint) -> bool:
    """True while the bytes a fingerprint covers are still there (the file may have grown)."""
    path = Path(fingerprint.path)
    try:
        return (path.stat().st_size >= fingerprint.size
                and _sample_sha256(path, fingerprint.size) == fingerprint.sample_sha256)
    except OSError as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: OSError, row: int | None = None) -> SourceError:
    reason = exc.strerror or str(exc) or type(exc).__name__
    return SourceError(f"cannot read the file: {reason}", path=str(path), row=row)


def _regular_file(path: Path) -> Path:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SourceError("no such file", path=str(path)) from None
    except NotADirectoryError:
        raise SourceError("no such file (a folder in the path is a file)",
                          path=str(path)) from None
    except OSError as exc:
        raise _unreadable(path, exc) from None
    if stat.S_ISDIR(mode):
        raise SourceError("is a folder, not a file: name a file or a glob such as "
                          "'folder/*.csv'", path=str(path))
    if not stat.S_ISREG(mode):
        raise SourceError("is not a regular file (a pipe, socket or device cannot be read "
                          "twice, and an import reads its input more than once)",
                          path=str(path))
    return path


def _resolve_files(pattern: str) -> tuple[Path, ...]:
    if any(ch in pattern for ch in "*?["):
        files = tuple(Path(p) for p in sorted(globbing.glob(pattern, recursive=True))
                      if Path(p).is_file())
        if not files:
            raise SourceError(f"no file matches {pattern!r}")
        return tuple(_regular_file(p) for p in files)
    return (_regular_file(Path(pattern)),)


# --- a byte-level CSV walker for error paths only -------------------------------------------


@dataclass(slots=True)
class _Walk:
    starts: list[int] = field(default_factory=list)   # byte offset of each field
    ends: list[int] = field(default_factory=list)
    end: int = 0                                      # offset just past the record
    open_quote: int | None = None                     # set when the data ended inside quotes


def _walk_record(data: bytes, delim: int, quote: int, start: int = 0, eol: int = 10) -> _Walk:
    """Fields of the one record that starts at `data[start]` (RFC 4180, quote at field start);
    records end at `eol` (LF, where a CR before it is not data; or CR in a CR-only file)."""
    walk = _Walk()
    i, n = start, len(data)
    field_start = i
    walk.starts.append(i)
    while i < n:
        if data[i] == quote and i == field_start:
            open_at = i
            i += 1
            while True:
                j = data.find(bytes([quote]), i)
                if j < 0:
                    walk.ends.append(n)
                    walk.open_quote = open_at
                    walk.end = n
                    return walk
                if j + 1 < n and data[j + 1] == quote:
                    i = j + 2
                    continue
                i = j + 1
                break
            continue
        byte = data[i]
        if byte == delim:
            walk.ends.append(i)
            i += 1
            field_start = i
            walk.starts.append(i)
            continue
        if byte == eol:
            walk.ends.append(i - 1 if eol == 10 and i > field_start and data[i - 1] == 13
                             else i)
            walk.end = i + 1
            return walk
        i += 1
    walk.ends.append(n)
    walk.end = n
    return walk


def _read_at(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(size)


def _blocks(path: Path, start: int, end: int, quote: bytes | None,
            eol: bytes = b"\n") -> Iterator[bytes]:
    """Bytes `start` to `end` of the file in pieces of about `_BLOCK_BYTES`, each cut just
    after a line end `eol` (one outside quotes when `quote` is given: quotes pair up, as the
    pre-scan counts them), the last one at `end`. A record longer than a block is held over
    whole (each byte is looked at once). Bytes past `end` (appended since the input was
    fingerprinted) are never read."""
    with path.open("rb") as f:
        f.seek(start)
        left = end - start
        held: list[bytes] = []
        quotes = 0   # in the held bytes
        while left > 0 and (data := f.read(min(_BLOCK_BYTES, left))):
            left -= len(data)
            cut = _last_record_end(data, quote, quotes, eol)
            if cut:
                yield b"".join([*held, data[:cut]])
                held, data = [], data[cut:]
                quotes = 0
            held.append(data)
            quotes += data.count(quote) if quote is not None else 0
        if any(held):
            yield b"".join(held)


def _last_record_end(data: bytes, quote: bytes | None, quotes_before: int,
                     eol: bytes = b"\n") -> int:
    """Offset just past the last line end of `data` outside quotes (0 when there is none),
    `quotes_before` quotes having been seen before `data`."""
    if quote is None:
        return data.rfind(eol) + 1
    quotes = quotes_before + data.count(quote)
    end = len(data)
    while (line_end := data.rfind(eol, 0, end)) >= 0:
        quotes -= data.count(quote, line_end, end)
        if quotes % 2 == 0:
            return line_end + 1
        end = line_end
    return 0


def _rebatched(frames: Iterator[pl.DataFrame], rows: int) -> Iterator[pl.DataFrame]:
    """The rows of `frames` in order, in frames of exactly `rows` rows (the last: the rest)."""
    held: list[pl.DataFrame] = []
    count = 0
    for frame in frames:
        offset = 0
        while count + frame.height - offset >= rows:
            held.append(frame.slice(offset, rows - count))
            offset += rows - count
            yield pl.concat(held, rechunk=True)
            held, count = [], 0
        if offset < frame.height:
            held.append(frame.slice(offset))
            count += frame.height - offset
    if held:
        yield pl.concat(held, rechunk=True)


# --- the reader -------------------------------------------------------------------------------


class Source:
    """One input (a file or a sorted glob of files) of one format, read as text."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.files = _resolve_files(spec.path)
        fmt = spec.format or _FORMATS.get(self.files[0].suffix.lower())
        if fmt is None:
            raise SourceError("unknown file type: name it .csv, .parquet or .ndjson, or pass "
                              "the format", path=str(self.files[0]))
        self.format: SourceFormat = fmt
        self.stats = SourceStats()
        self._header: dict[Path, bytes] = {}   # CSV: the header record's bytes, per file
        self._eol: dict[Path, bytes] = {}      # CSV: the line end, per file
        self._checked: Fingerprint | None = None  # the files as the last full check saw them
        self._pinned = self.fingerprint()      # the bytes this source reads
        self.columns: tuple[str, ...] = self._columns()

    def __repr__(self) -> str:
        return (f"Source({self.spec.path!r}, format={self.format}, files={len(self.files)}, "
                f"rows_read={self.stats.rows_read})")

    # header ---------------------------------------------------------------------------

    def _columns(self) -> tuple[str, ...]:
        first: tuple[str, ...] | None = None
        for path in self.files:
            names = (self._csv_header(path) if self.format == "csv"
                     else self._ndjson_header(path) if self.format == "ndjson"
                     else self._frame_header(path))
            if first is None:
                first = names
            elif names != first:
                raise SourceError(f"columns differ from {self.files[0].name}: "
                                  f"{list(names)} vs {list(first)}", path=str(path))
        assert first is not None
        if self.format == "ndjson":
            self._checked = self._pinned  # the header pass read and checked every line
        return first

    def _size(self, path: Path) -> int:
        """How many bytes of `path` this source reads: its size when last fingerprinted."""
        return next(f.size for f in self._pinned.files if f.path == str(path))

    def _csv_header(self, path: Path) -> tuple[str, ...]:
        try:
            head = _read_at(path, 0, min(_HEAD_BYTES, self._size(path)))
        except OSError as exc:
            raise _unreadable(path, exc) from None
        bom = 3 if head.startswith(codecs.BOM_UTF8) else 0
        if not head[bom:].strip():
            raise SourceError("the file is empty (no header row)", path=str(path))
        # Old Mac files end lines with CR alone: with no LF in sight, CR ends records (the
        # pre-scan refuses a LF found later on).
        eol = b"\r" if b"\n" not in head and b"\r" in head else b"\n"
        self._eol[path] = eol
        walk = _walk_record(head, ord(self.spec.delimiter), ord(self.spec.quote_char), bom,
                            eol[0])
        self._header[path] = head[:walk.end]
        names: list[str] = []
        seen: dict[str, int] = {}
        for index, (start, end) in enumerate(zip(walk.starts, walk.ends, strict=True)):
            raw = head[start:end]
            if raw[:1] == self.spec.quote_char.encode() and raw[-1:] == raw[:1]:
                raw = raw[1:-1].replace(raw[:1] * 2, raw[:1])
            try:
                name = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                raise SourceError("header is not valid UTF-8", path=str(path),
                                  byte_offset=start + exc.start) from None
            if not name:
                raise SourceError(f"header: column {index + 1} has an empty name",
                                  path=str(path), byte_offset=start)
            if "\x00" in name:
                raise SourceError(f"header: column {index + 1} has a NUL byte in its name",
                                  path=str(path), byte_offset=start)
            if name in seen:
                raise SourceError(f"header: duplicate column name (columns {seen[name] + 1} "
                                  f"and {index + 1})", path=str(path), column=name,
                                  byte_offset=start)
            seen[name] = index
            names.append(name)
        return tuple(names)

    def _frame_header(self, path: Path) -> tuple[str, ...]:
        try:
            names = tuple(self._scan(path).collect_schema().names())
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise SourceError(f"cannot read the file: {exc}", path=str(path)) from None
        for index, name in enumerate(names):
            if not name.strip():
                raise SourceError(f"column {index + 1} has an empty name", path=str(path))
        return names

    def _ndjson_header(self, path: Path) -> tuple[str, ...]:
        """Every key of every line, in the order first seen; checks every line (a line that
        is not one JSON object refuses the file before anything is sent)."""
        names: dict[str, None] = {}
        row = 1
        for offset, block in self._ndjson_blocks(path):
            keys, rows = _ndjson_keys(block, path, row, offset)
            names.update(dict.fromkeys(keys))
            row += rows
        if not names:
            raise SourceError("the file holds no JSON object", path=str(path))
        for index, name in enumerate(names):
            if not name.strip() or "\x00" in name:
                raise SourceError(f"key {index + 1} ({name!r}) is empty or holds a NUL byte",
                                  path=str(path))
        return tuple(names)

    def _ndjson_blocks(self, path: Path) -> Iterator[tuple[int, bytes]]:
        """(byte offset, bytes) of each block of whole lines."""
        offset = 0
        try:
            for block in _blocks(path, 0, self._size(path), None):
                yield offset, block
                offset += len(block)
        except OSError as exc:
            raise _unreadable(path, exc) from None

    def _scan(self, path: Path) -> pl.LazyFrame:
        return pl.scan_parquet(path)

    def _csv_options(self, path: Path) -> dict[str, Any]:
        return {"infer_schema": False, "separator": self.spec.delimiter,
                "quote_char": self.spec.quote_char,
                "encoding": "utf8-lossy" if self.spec.encoding_errors == "replace" else "utf8",
                "truncate_ragged_lines": False, "raise_if_empty": False,
                "eol_char": self._eol[path].decode()}

    # fingerprint ----------------------------------------------------------------------

    def fingerprint(self) -> Fingerprint:
        """The files as they are now; this source reads exactly the bytes it covers (a file
        that grows while it is read is read up to the size it had here)."""
        self._pinned = Fingerprint(tuple(_file_fingerprint(p) for p in self.files))
        return self._pinned

    def _repin(self) -> None:
        """Keep reading the fingerprinted bytes while they are still there (rows appended
        since are left for the next run, whose fingerprint covers them); take a new
        fingerprint when a file was rewritten (its columns must not have changed)."""
        if all(_holds(f) for f in self._pinned.files):
            return
        self.fingerprint()
        if self._columns() != self.columns:
            raise SourceError("the columns changed since the input was opened",
                              path=self.spec.path)

    # checks ---------------------------------------------------------------------------

    def check(self) -> None:
        """Run the strict file checks over every file (CSV); raises `SourceError`.

        Once per content: files whose fingerprint has not changed since they passed are
        not scanned again (the date-order detection and the import both read them).
        NDJSON files are checked line by line (and Parquet column types) when opened, and
        again here only when they changed since."""
        self._repin()
        seen = self._pinned
        if seen == self._checked:
            return
        for path in self.files:
            if self.format == "csv":
                try:
                    _CsvScan(path, self.spec, self.columns, self._size(path),
                             self._eol[path]).run()
                except OSError as exc:
                    raise _unreadable(path, exc) from None
            elif self.format == "ndjson" and self._ndjson_header(path) != self.columns:
                raise SourceError("the keys changed since the file was opened",
                                  path=str(path))
        self._checked = seen

    # batches --------------------------------------------------------------------------

    def batches(self, *, check: bool = True,
                columns: Sequence[str] | None = None) -> Iterator[pl.DataFrame]:
        """Batches of at most `chunk_rows` rows: `source_row` (Int64) + String columns.

        With `check` (default) every file is pre-scanned before the first batch, so a
        malformed file fails before anything is sent. `columns` reads only those (rows
        blank in all of them are left out).
        """
        if check:
            self.check()
        else:
            self._repin()
        wanted = self.columns if columns is None else tuple(columns)
        unknown = [c for c in wanted if c not in self.columns]
        if unknown:
            raise SourceError(f"no such column: {', '.join(unknown)}", path=self.spec.path)
        self.stats = SourceStats()
        next_row = 1
        ours = self.format == "csv" and WRITTEN_BY_HSBULK in self.columns
        for path in self.files:
            last = next_row - 1
            for batch in self._guarded(path, next_row, wanted):
                if batch.height == 0:
                    continue
                if ours:  # a rejects file of ours: undo the spreadsheet-formula escape
                    batch = batch.with_columns(unescape_expr(c) for c in wanted)
                last = int(batch[SOURCE_ROW][-1])
                blank = pl.all_horizontal(pl.col(c).is_null() for c in wanted)
                mask = batch.select(blank).to_series()
                blanks = int(mask.sum())
                if blanks:
                    self.stats.blank_rows += blanks
                    batch = batch.filter(~mask)
                self.stats.rows_read += batch.height
                if batch.height:
                    yield batch
            next_row = last + 1

    def _guarded(self, path: Path, first_row: int,
                 columns: tuple[str, ...]) -> Iterator[pl.DataFrame]:
        """`_file_batches`, with any read or parse failure a `SourceError` naming the file
        and the first row not read."""
        row = first_row
        try:
            for batch in self._file_batches(path, first_row, columns):
                yield batch
                if batch.height:
                    row = int(batch[SOURCE_ROW][-1]) + 1
        except OSError as exc:
            raise _unreadable(path, exc, row) from None
        except pl.exceptions.PolarsError as exc:
            message = str(exc).split("\n", 1)[0]
            raise SourceError(f"cannot read the file: {message}", path=str(path),
                              row=row) from None

    def _file_batches(self, path: Path, first_row: int,
                      columns: tuple[str, ...]) -> Iterator[pl.DataFrame]:
        if self.format == "csv":
            yield from _rebatched(self._csv_blocks(path, first_row, columns),
                                  self.spec.chunk_rows)
            return
        if self.format == "ndjson":
            yield from _rebatched(self._ndjson_frames(path, first_row, columns),
                                  self.spec.chunk_rows)
            return
        lazy = self._scan(path).with_row_index(SOURCE_ROW, offset=first_row)
        types = self._scan(path).collect_schema()
        lazy = lazy.select(pl.col(SOURCE_ROW).cast(pl.Int64),
                           *(_as_text(c, types[c]) for c in columns))
        for batch in lazy.collect_batches(chunk_size=self.spec.chunk_rows):
            yield batch.rechunk()

    def _ndjson_frames(self, path: Path, first_row: int,
                       columns: tuple[str, ...]) -> Iterator[pl.DataFrame]:
        row = first_row   # rows are the non-blank lines
        for offset, block in self._ndjson_blocks(path):
            frame = _ndjson_frame(block, columns, path, row - first_row + 1, offset)
            yield frame.select(pl.int_range(row, row + frame.height, dtype=pl.Int64)
                               .alias(SOURCE_ROW), *columns)
            row += frame.height

    def _csv_blocks(self, path: Path, first_row: int,
                    columns: tuple[str, ...]) -> Iterator[pl.DataFrame]:
        """Each block of records, parsed after the header as a scan of the file would be."""
        header = self._header[path]
        options = self._csv_options(path)
        if columns != self.columns:
            options["columns"] = list(columns)
        next_row = first_row
        for block in _blocks(path, len(header), self._size(path),
                             self.spec.quote_char.encode(), self._eol[path]):
            try:
                frame = pl.read_csv(header + block, **options)
                frame = frame.select(
                    pl.int_range(next_row, next_row + frame.height, dtype=pl.Int64)
                    .alias(SOURCE_ROW), *columns)
            except pl.exceptions.PolarsError as exc:
                message = str(exc).split("\n", 1)[0]
                raise SourceError(f"cannot read the file: {message}", path=str(path),
                                  row=next_row) from None
            next_row += frame.height
            yield frame


def _as_text(name: str, dtype: pl.DataType) -> pl.Expr:
    """A typed (Parquet) column as the text normalisation reads back to the same value.

    Instants with a time zone become UTC with a `Z`; naive datetimes stay naive (read in
    --timezone, like naive text); dates `YYYY-MM-DD`; times keep their fraction; durations
    ISO 8601 (`PT1H30M`); decimals keep their digits; booleans `true`/`false`; lists and
    structs their JSON text (as NDJSON gives them). Bytes must be UTF-8 text (else the read
    fails naming the column)."""
    column = pl.col(name)
    if isinstance(dtype, pl.String):
        return column
    text: pl.Expr
    if isinstance(dtype, pl.Boolean):
        text = pl.when(column).then(pl.lit("true")).when(~column).then(pl.lit("false"))
    elif dtype.is_nested():
        encoded = pl.struct(column.alias("v")).struct.json_encode()  # {"v":<value>}
        text = pl.when(column.is_not_null()).then(encoded.str.slice(5).str.strip_suffix("}"))
    elif isinstance(dtype, pl.Datetime):
        if dtype.time_zone:
            text = column.dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        else:
            text = column.dt.strftime("%Y-%m-%dT%H:%M:%S%.3f")
    elif isinstance(dtype, pl.Time):
        text = column.dt.to_string("%H:%M:%S%.f")
    elif isinstance(dtype, pl.Duration):
        text = column.dt.to_string("iso")
    else:
        text = column.cast(pl.String)
    return text.alias(name)


# --- NDJSON: every value as text ----------------------------------------------------------

# What polars' NDJSON reader would change: numbers with 16+ digits (it reads them as 64-bit
# floats or integers, rounding or refusing) and lone surrogate escapes (it makes them NUL).
# Blocks that may hold one are read exactly, by msgspec (numbers as written).
_DIGIT_RUNS = bytes.maketrans(b"123456789.", b"0" * 10)   # 16 zeros = 16 digits or points
_SURROGATE = re.compile(rb"\\u[dD][89abAB]")
_JSON_OBJECT = msgspec.json.Decoder(dict[str, Any], float_hook=Decimal)
_JSON_OBJECTS = msgspec.json.Decoder(list[dict[str, Any]], float_hook=Decimal)


def _json_lines(block: bytes) -> list[bytes]:
    """The non-blank lines of a block (the rows, as polars counts them)."""
    return [line for line in block.split(b"\n") if line.strip()]


def _polars_reads_exactly(block: bytes) -> bool:
    """False when polars' NDJSON reader might change a value of `block` (a cheap test that
    may say False for a harmless block: 16 digits inside a string)."""
    return (b"0" * 16 not in block.translate(_DIGIT_RUNS)
            and (b"\\u" not in block or not _SURROGATE.search(block)))


def _json_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    return msgspec.json.encode(value).decode()


def _json_rows(block: bytes, path: Path, first_row: int, offset: int) -> list[dict[str, Any]]:
    """Every line of `block` as a dict, numbers exact; the first line that is not one JSON
    object is a `SourceError` with its row and byte offset."""
    lines = _json_lines(block)
    try:
        rows = _JSON_OBJECTS.decode(b"[" + b",".join(lines) + b"]")
        if len(rows) == len(lines):   # `{..},{..}` on one line would pass as two rows
            return rows
    except msgspec.DecodeError:
        pass
    row, at = first_row, offset
    for line in block.split(b"\n"):
        if line.strip():
            try:
                _JSON_OBJECT.decode(line)
            except msgspec.DecodeError as exc:
                raise SourceError(f"line is not one JSON object ({exc})", path=str(path),
                                  row=row, byte_offset=at) from None
            row += 1
        at += len(line) + 1
    raise AssertionError("unreachable: the lines decoded one by one")  # pragma: no cover


def _ndjson_keys(block: bytes, path: Path, first_row: int,
                 offset: int) -> tuple[list[str], int]:
    """The keys of the lines of `block` and how many lines (rows) it holds."""
    if not block.strip():
        return [], 0
    if _polars_reads_exactly(block):
        try:
            frame = pl.read_ndjson(io.BytesIO(block), infer_schema_length=None)
            return frame.columns, frame.height
        except pl.exceptions.PolarsError:
            pass
    keys: dict[str, None] = {}
    rows = _json_rows(block, path, first_row, offset)
    for row in rows:
        keys.update(dict.fromkeys(row))
    return list(keys), len(rows)


def _ndjson_frame(block: bytes, columns: tuple[str, ...], path: Path, first_row: int,
                  offset: int) -> pl.DataFrame:
    """The lines of `block` as String columns (numbers as written, nested values as JSON
    text, booleans true/false); a block polars would read lossily is read by msgspec."""
    schema = dict.fromkeys(columns, pl.String())
    if not block.strip():
        return pl.DataFrame(schema=schema)
    if _polars_reads_exactly(block):
        try:
            return pl.read_ndjson(io.BytesIO(block), schema=schema)
        except pl.exceptions.PolarsError:
            pass
    rows = _json_rows(block, path, first_row, offset)
    return pl.DataFrame({c: [_json_text(r.get(c)) for r in rows] for c in columns},
                        schema=schema)


def open_source(spec: SourceSpec) -> Source:
    """Resolve the files, read and check the header(s); nothing is streamed yet."""
    if spec.frame is not None:
        return FrameSource(spec)
    return Source(spec)


# --- a polars frame as the input --------------------------------------------------------------


class FrameInput:
    """A polars DataFrame or LazyFrame given as an import's input instead of a file.

    `name` stands where a file's path would (journals, messages). `digest()` is a hash of
    the content as it is sent (every column as text, in row order), computed once: a frame
    whose content changed is a new input, refused by an unfinished run's journal like a
    changed file. A LazyFrame is read in slices (`collect_batches`) on every pass, so memory
    stays bounded by `chunk_rows`; it must give the same rows each time it is collected.
    """

    def __init__(self, frame: pl.DataFrame | pl.LazyFrame, name: str) -> None:
        self.lazy = frame.lazy()
        self.name = name
        try:
            schema = self.lazy.collect_schema()
        except pl.exceptions.PolarsError as exc:
            raise SourceError(f"cannot read the frame: {exc}", path=name) from None
        if SOURCE_ROW in schema:
            raise SourceError(f"the frame has a column named {SOURCE_ROW!r}; rename it",
                              path=name)
        if not schema:
            raise SourceError("the frame has no columns", path=name)
        self.schema = schema
        self.rows = frame.height if isinstance(frame, pl.DataFrame) else None
        self._digest: str | None = None

    def __repr__(self) -> str:
        return f"FrameInput({self.name!r}, columns={len(self.schema)}, rows={self.rows})"

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.schema.names())

    def text_slices(self, columns: Sequence[str], chunk_rows: int) -> Iterator[pl.DataFrame]:
        """`source_row` (1-based, Int64) + `columns` as text, `chunk_rows` at most a slice."""
        query = self.lazy.with_row_index(SOURCE_ROW, offset=1).select(
            pl.col(SOURCE_ROW).cast(pl.Int64), *(_as_text(c, self.schema[c]) for c in columns))
        try:
            for frame in query.collect_batches(chunk_size=chunk_rows):
                yield frame.rechunk()
        except pl.exceptions.PolarsError as exc:
            message = str(exc).split("\n", 1)[0]
            raise SourceError(f"cannot read the frame: {message}", path=self.name) from None

    def digest(self) -> str:
        """sha256 over the column names and a 64-bit hash of every row as text."""
        if self._digest is None:
            h = hashlib.sha256("\0".join(self.columns).encode())
            for frame in self.text_slices(self.columns, 100_000):
                row_hashes = frame.drop(SOURCE_ROW).hash_rows(seed=0)
                h.update(array.array("Q", row_hashes.to_list()).tobytes())
            self._digest = h.hexdigest()
        return self._digest


class FrameSource(Source):
    """A `Source` over a `FrameInput` (`SourceSpec.frame`): the same batches as a file's
    (`source_row` + String columns, rows blank in every column left out and counted), the
    same text for typed columns as a Parquet file's (`_as_text`); no file checks to run."""

    def __init__(self, spec: SourceSpec) -> None:
        if spec.frame is None:
            raise SourceError("no frame given", path=spec.path)
        self.spec = spec
        self.input = spec.frame
        self.files = ()
        self.format = "frame"
        self.stats = SourceStats()
        self.columns = self.input.columns

    def fingerprint(self) -> Fingerprint:
        """The frame's content digest, in a file fingerprint's clothes."""
        return Fingerprint((FileFingerprint(self.input.name, self.input.rows or 0, 0,
                                            self.input.digest()),))

    def check(self) -> None:
        """A frame has typed columns and unique names: nothing to check."""

    def batches(self, *, check: bool = True,
                columns: Sequence[str] | None = None) -> Iterator[pl.DataFrame]:
        wanted = self.columns if columns is None else tuple(columns)
        unknown = [c for c in wanted if c not in self.columns]
        if unknown:
            raise SourceError(f"no such column: {', '.join(unknown)}", path=self.input.name)
        self.stats = SourceStats()
        for frame in self.input.text_slices(wanted, self.spec.chunk_rows):
            kept = frame.filter(~pl.all_horizontal(pl.col(c).is_null() for c in wanted))
            self.stats.blank_rows += frame.height - kept.height
            self.stats.rows_read += kept.height
            if kept.height:
                yield kept


# --- the CSV pre-scan -------------------------------------------------------------------------


@dataclass(slots=True)
class _Carry:
    """Scan state carried from one batch of lines to the next."""

    quotes: int = 0          # quotes seen so far (parity = inside a quoted field)
    offset: int = 0          # byte offset of the next line
    ended: bool = True       # the previous line ended a record
    rec_start: int = 0       # byte offset where the pending record began
    rec_index: int = -1      # index of the pending record (0 = header, n = data row n)
    delims: int = 0          # delimiters seen so far outside quotes
    delims_before: int = 0   # ... when the pending record began


class _CsvScan:
    """Streaming check of one CSV file, line by line in polars."""

    def __init__(self, path: Path, spec: SourceSpec, columns: Sequence[str], size: int,
                 eol: bytes = b"\n") -> None:
        self.path, self.spec, self.columns = path, spec, tuple(columns)
        self.size = size   # bytes to check (those the read will see)
        self.eol_char = eol
        head = _read_at(path, 0, min(_HEAD_BYTES, size))
        first_line = head.split(eol, 1)[0]
        self.eol = 2 if eol == b"\n" and first_line.endswith(b"\r") else 1
        self.delim = spec.delimiter
        self.quote = spec.quote_char
        # The lines are read as one column split on NUL: a NUL in the data (rejected later,
        # per value) is counted as another byte that is neither quote nor delimiter.
        self.nul_stand_in = next(b for b in (b"\x01", b"\x02", b"\x03")
                                 if b not in (self.delim.encode(), self.quote.encode()))

    def error(self, message: str, *, row: int | None = None, column: str | None = None,
              byte_offset: int | None = None) -> SourceError:
        return SourceError(message, path=str(self.path), row=row, column=column,
                           byte_offset=byte_offset)

    def run(self) -> None:
        carry = _Carry()
        for block in _blocks(self.path, 0, self.size, None, self.eol_char):
            if b"\x00" in block:
                block = block.replace(b"\x00", self.nul_stand_in)
            if self.eol_char == b"\r" and (lf := block.find(b"\n")) >= 0:
                raise self.error("the file ends lines with CR alone (old Mac style) but has "
                                 "a LF here: convert its line ends to LF or CRLF",
                                 byte_offset=carry.offset + lf)
            batch = pl.read_csv(
                block, has_header=False, separator="\x00", quote_char=None,
                infer_schema=False, encoding="utf8-lossy", truncate_ragged_lines=True,
                empty_string_is_null=False, raise_if_empty=False,
                eol_char=self.eol_char.decode())
            if batch.width == 0 or batch.height == 0:
                continue
            carry = self._batch(batch.select(pl.col(batch.columns[0]).fill_null("")
                                             .alias("line")), carry)
        if carry.quotes % 2:
            self._unterminated(carry)

    def _batch(self, lines: pl.DataFrame, carry: _Carry) -> _Carry:
        line = pl.col("line")
        q = line.str.count_matches(self.quote, literal=True).cast(pl.Int64)
        frame = lines.with_columns(
            q.alias("q"),
            (line.str.len_bytes().cast(pl.Int64) + self.eol).alias("size"),
            line.str.count_matches(self.delim, literal=True).cast(pl.Int64).alias("d"),
        ).with_columns(
            ((pl.col("q").cum_sum() + carry.quotes) % 2 == 1).alias("ends_inside"),
            (pl.col("size").cum_sum() - pl.col("size") + carry.offset).alias("start"),
        ).with_columns(
            pl.col("ends_inside").xor(pl.col("q") % 2 == 1).alias("starts_inside"),
            (~pl.col("ends_inside")).shift(1, fill_value=carry.ended).alias("first"),
        )
        # Delimiters outside quotes: only lines with quotes pay for dropping quoted parts.
        pre = pl.when(pl.col("starts_inside")).then(pl.lit(self.quote)).otherwise(pl.lit(""))
        post = pl.when(pl.col("ends_inside")).then(pl.lit(self.quote)).otherwise(pl.lit(""))
        quote_re = _re_escape(self.quote)
        outside = (pl.when(pl.col("q") > 0).then(pl.concat_str(pre, line, post))
                   .str.replace_all(f"{quote_re}[^{quote_re}]*{quote_re}", "")
                   .str.count_matches(self.delim, literal=True).cast(pl.Int64))
        d = (pl.when(pl.col("q") > 0).then(outside)
             .when(pl.col("starts_inside")).then(pl.lit(0, dtype=pl.Int64))
             .otherwise(pl.col("d")))
        frame = frame.with_columns(d.alias("d_out"))
        d = pl.col("d_out")
        frame = frame.with_columns(
            (d.cum_sum() + carry.delims).alias("cum_d"),
            (pl.col("first").cast(pl.Int64).cum_sum() + carry.rec_index).alias("rec"),
        ).with_columns(
            pl.when(pl.col("first")).then(pl.col("start")).otherwise(None).forward_fill()
            .fill_null(carry.rec_start).alias("rec_start"),
            pl.when(pl.col("first")).then(pl.col("cum_d") - d).otherwise(None).forward_fill()
            .fill_null(carry.delims_before).alias("d_before"),
        )
        if self.spec.encoding_errors == "strict":
            suspicious = frame.filter(line.str.contains("\ufffd", literal=True))
            for row in suspicious.iter_rows(named=True):
                self._check_utf8(row)
        ends = frame.filter(~pl.col("ends_inside")).with_columns(
            (pl.col("cum_d") - pl.col("d_before") + 1).alias("fields"),
            (pl.col("start") + pl.col("size") - pl.col("rec_start")).alias("rec_size"),
            (pl.col("first") & (line == "")).alias("blank"),
        )
        ncols = len(self.columns)
        bad = ends.filter((pl.col("rec") > 0) & ~pl.col("blank")
                          & (pl.col("fields") != ncols))
        if bad.height:
            self._ragged(bad.row(0, named=True), ncols)
        limit = self.spec.max_field_chars
        if limit is not None:
            for row in ends.filter((pl.col("rec") > 0) & (pl.col("rec_size") > limit)) \
                    .iter_rows(named=True):
                self._check_long(row, limit)
        last = frame.row(frame.height - 1, named=True)
        return _Carry(
            quotes=carry.quotes + int(frame["q"].sum()),
            offset=last["start"] + last["size"],
            ended=not last["ends_inside"],
            rec_start=last["start"] + last["size"] if not last["ends_inside"]
            else last["rec_start"],
            rec_index=last["rec"],
            delims=last["cum_d"],
            delims_before=last["cum_d"] if not last["ends_inside"] else last["d_before"],
        )

    # error paths: exact location with the byte-level walker ------------------------------

    def _record(self, rec_start: int, size: int) -> tuple[bytes, _Walk]:
        data = _read_at(self.path, rec_start, size)
        return data, _walk_record(data, ord(self.delim), ord(self.quote), 0, self.eol_char[0])

    def _ragged(self, row: dict[str, int], ncols: int) -> None:
        fields, rec = row["fields"], row["rec"]
        if fields > ncols:
            _, walk = self._record(row["rec_start"], row["rec_size"])
            extra_at = walk.starts[ncols] if len(walk.starts) > ncols else None
            raise self.error(f"row has {fields} fields but the header has {ncols} "
                             "(extra field)", row=rec,
                             byte_offset=(row["rec_start"] + extra_at) if extra_at is not None
                             else row["rec_start"])
        raise self.error(f"row has {fields} fields but the header has {ncols} "
                         f"(missing {', '.join(repr(c) for c in self.columns[fields:])})",
                         row=rec, column=self.columns[fields], byte_offset=row["rec_start"])

    def _check_long(self, row: dict[str, int], limit: int) -> None:
        data, walk = self._record(row["rec_start"], row["rec_size"])
        for index, (start, end) in enumerate(zip(walk.starts, walk.ends, strict=False)):
            text = data[start:end].decode("utf-8", errors="replace")
            if text[:1] == self.quote and text[-1:] == self.quote:
                text = text[1:-1].replace(self.quote * 2, self.quote)
            if len(text) > limit:
                raise self.error(f"field is longer than {limit} characters "
                                 f"({len(text)} here)", row=row["rec"],
                                 column=self.columns[index] if index < len(self.columns)
                                 else None, byte_offset=row["rec_start"] + start)

    def _check_utf8(self, row: dict[str, int]) -> None:
        raw = _read_at(self.path, row["start"], _HEAD_BYTES).split(self.eol_char, 1)[0]
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            offset = row["start"] + exc.start
            prefix = _read_at(self.path, row["rec_start"], offset - row["rec_start"])
            walk = _walk_record(prefix + self.eol_char, ord(self.delim), ord(self.quote), 0,
                                self.eol_char[0])
            index = len(walk.starts) - 1
            raise self.error("invalid UTF-8 (set encoding_errors to replace to substitute "
                             "U+FFFD)", row=row["rec"] if row["rec"] > 0 else None,
                             column=self.columns[index] if index < len(self.columns) else None,
                             byte_offset=offset) from None

    def _unterminated(self, carry: _Carry) -> None:
        _, walk = self._record(carry.rec_start, _HEAD_BYTES)
        at = walk.open_quote if walk.open_quote is not None else 0
        index = len(walk.starts) - 1
        raise self.error("unterminated quoted field: the quote opened here is never closed",
                         row=carry.rec_index if carry.rec_index > 0 else None,
                         column=self.columns[index] if index < len(self.columns) else None,
                         byte_offset=carry.rec_start + at)


def _re_escape(char: str) -> str:
    return "\\" + char if char in r"\^$.|?*+()[]{}-" else char
