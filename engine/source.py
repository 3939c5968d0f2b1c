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
"""

from __future__ import annotations

import codecs
import glob as globbing
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from engine.errors import SourceError

SOURCE_ROW = "source_row"
MAX_FIELD_CHARS = 65_536
_HEAD_BYTES = 1 << 20
_BLOCK_BYTES = 4 << 20
_HASH_BYTES = 1 << 16

SourceFormat = Literal["csv", "parquet", "ndjson"]
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
    files_done: int = 0


def _file_fingerprint(path: Path) -> FileFingerprint:
    info = path.stat()
    h = hashlib.sha256()
    with path.open("rb") as f:
        h.update(f.read(_HASH_BYTES))
        if info.st_size > 2 * _HASH_BYTES:
            f.seek(info.st_size - _HASH_BYTES)
        h.update(f.read(_HASH_BYTES))
    return FileFingerprint(str(path), info.st_size, info.st_mtime_ns, h.hexdigest())


def _resolve_files(pattern: str) -> tuple[Path, ...]:
    if any(ch in pattern for ch in "*?["):
        files = tuple(Path(p) for p in sorted(globbing.glob(pattern, recursive=True))
                      if Path(p).is_file())
        if not files:
            raise SourceError(f"no file matches {pattern!r}")
        return files
    path = Path(pattern)
    if not path.is_file():
        raise SourceError("no such file", path=pattern)
    return (path,)


# --- a byte-level CSV walker for error paths only -------------------------------------------


@dataclass(slots=True)
class _Walk:
    starts: list[int] = field(default_factory=list)   # byte offset of each field
    ends: list[int] = field(default_factory=list)
    end: int = 0                                      # offset just past the record
    open_quote: int | None = None                     # set when the data ended inside quotes


def _walk_record(data: bytes, delim: int, quote: int, start: int = 0) -> _Walk:
    """Fields of the one record that starts at `data[start]` (RFC 4180, quote at field start)."""
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
        if byte == 10:
            walk.ends.append(i - 1 if i > field_start and data[i - 1] == 13 else i)
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


def _blocks(path: Path, start: int, quote: bytes | None) -> Iterator[bytes]:
    """The file from byte `start` in pieces of about `_BLOCK_BYTES`, each cut just after a
    line end (one outside quotes when `quote` is given: quotes pair up, as the pre-scan
    counts them), the last one at the end of the file. A record longer than a block is
    held over whole (each byte is looked at once)."""
    with path.open("rb") as f:
        f.seek(start)
        held: list[bytes] = []
        quotes = 0   # in the held bytes
        while data := f.read(_BLOCK_BYTES):
            cut = _last_record_end(data, quote, quotes)
            if cut:
                yield b"".join([*held, data[:cut]])
                held, data = [], data[cut:]
                quotes = 0
            held.append(data)
            quotes += data.count(quote) if quote is not None else 0
        if any(held):
            yield b"".join(held)


def _last_record_end(data: bytes, quote: bytes | None, quotes_before: int) -> int:
    """Offset just past the last line end of `data` outside quotes (0 when there is none),
    `quotes_before` quotes having been seen before `data`."""
    if quote is None:
        return data.rfind(b"\n") + 1
    quotes = quotes_before + data.count(quote)
    end = len(data)
    while (line_end := data.rfind(b"\n", 0, end)) >= 0:
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
        self._checked: Fingerprint | None = None  # the files as the last full check saw them
        self.columns: tuple[str, ...] = self._columns()

    def __repr__(self) -> str:
        return (f"Source({self.spec.path!r}, format={self.format}, files={len(self.files)}, "
                f"rows_read={self.stats.rows_read})")

    # header ---------------------------------------------------------------------------

    def _columns(self) -> tuple[str, ...]:
        first: tuple[str, ...] | None = None
        for path in self.files:
            names = (self._csv_header(path) if self.format == "csv"
                     else self._frame_header(path))
            if first is None:
                first = names
            elif names != first:
                raise SourceError(f"columns differ from {self.files[0].name}: "
                                  f"{list(names)} vs {list(first)}", path=str(path))
        assert first is not None
        return first

    def _csv_header(self, path: Path) -> tuple[str, ...]:
        head = _read_at(path, 0, _HEAD_BYTES)
        bom = 3 if head.startswith(codecs.BOM_UTF8) else 0
        if not head[bom:].strip():
            raise SourceError("the file is empty (no header row)", path=str(path))
        walk = _walk_record(head, ord(self.spec.delimiter), ord(self.spec.quote_char), bom)
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

    def _scan(self, path: Path) -> pl.LazyFrame:
        if self.format == "parquet":
            return pl.scan_parquet(path)
        if self.format == "ndjson":
            return pl.scan_ndjson(path, infer_schema_length=1000)
        return pl.scan_csv(path, **self._csv_options())

    def _csv_options(self) -> dict[str, Any]:
        return {"infer_schema": False, "separator": self.spec.delimiter,
                "quote_char": self.spec.quote_char,
                "encoding": "utf8-lossy" if self.spec.encoding_errors == "replace" else "utf8",
                "truncate_ragged_lines": False, "raise_if_empty": False}

    # fingerprint ----------------------------------------------------------------------

    def fingerprint(self) -> Fingerprint:
        return Fingerprint(tuple(_file_fingerprint(p) for p in self.files))

    # checks ---------------------------------------------------------------------------

    def check(self) -> None:
        """Run the strict file checks over every file (CSV); raises `SourceError`.

        Once per content: files whose fingerprint has not changed since they passed are
        not scanned again (the date-order detection and the import both read them)."""
        if self.format != "csv":
            return
        seen = self.fingerprint()
        if seen == self._checked:
            return
        for path in self.files:
            _CsvScan(path, self.spec, self.columns).run()
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
        wanted = self.columns if columns is None else tuple(columns)
        unknown = [c for c in wanted if c not in self.columns]
        if unknown:
            raise SourceError(f"no such column: {', '.join(unknown)}", path=self.spec.path)
        self.stats = SourceStats()
        next_row = 1
        for path in self.files:
            last = next_row - 1
            for batch in self._file_batches(path, next_row, wanted):
                if batch.height == 0:
                    continue
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
            self.stats.files_done += 1

    def _file_batches(self, path: Path, first_row: int,
                      columns: tuple[str, ...]) -> Iterator[pl.DataFrame]:
        if self.format == "csv":
            yield from _rebatched(self._csv_blocks(path, first_row, columns),
                                  self.spec.chunk_rows)
            return
        lazy = self._scan(path).with_row_index(SOURCE_ROW, offset=first_row)
        types = self._scan(path).collect_schema()
        lazy = lazy.select(pl.col(SOURCE_ROW).cast(pl.Int64),
                           *(_as_text(c, types[c]) for c in columns))
        try:
            for batch in lazy.collect_batches(chunk_size=self.spec.chunk_rows):
                yield batch.rechunk()
        except pl.exceptions.PolarsError as exc:
            message = str(exc).split("\n", 1)[0]
            raise SourceError(f"cannot read the file: {message}", path=str(path)) from None


    def _csv_blocks(self, path: Path, first_row: int,
                    columns: tuple[str, ...]) -> Iterator[pl.DataFrame]:
        """Each block of records, parsed after the header as a scan of the file would be."""
        header = self._header[path]
        options = self._csv_options()
        if columns != self.columns:
            options["columns"] = list(columns)
        next_row = first_row
        for block in _blocks(path, len(header), self.spec.quote_char.encode()):
            try:
                frame = pl.read_csv(header + block, **options)
                frame = frame.select(
                    pl.int_range(next_row, next_row + frame.height, dtype=pl.Int64)
                    .alias(SOURCE_ROW), *columns)
            except pl.exceptions.PolarsError as exc:
                message = str(exc).split("\n", 1)[0]
                raise SourceError(f"cannot read the file: {message}", path=str(path)) from None
            next_row += frame.height
            yield frame


def _as_text(name: str, dtype: pl.DataType) -> pl.Expr:
    column = pl.col(name)
    if isinstance(dtype, pl.String):
        return column
    if isinstance(dtype, pl.Boolean):
        return (pl.when(column).then(pl.lit("true")).when(~column).then(pl.lit("false"))
                .alias(name))
    if dtype.is_nested():
        raise SourceError(f"column {name!r} holds nested values ({dtype}); flatten it first")
    if isinstance(dtype, pl.Datetime):
        return column.dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ" if dtype.time_zone
                                  else "%Y-%m-%dT%H:%M:%S%.3f").alias(name)
    return column.cast(pl.String).alias(name)


def open_source(spec: SourceSpec) -> Source:
    """Resolve the files, read and check the header(s); nothing is streamed yet."""
    return Source(spec)


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

    def __init__(self, path: Path, spec: SourceSpec, columns: Sequence[str]) -> None:
        self.path, self.spec, self.columns = path, spec, tuple(columns)
        head = _read_at(path, 0, _HEAD_BYTES)
        first_line = head.split(b"\n", 1)[0]
        self.eol = 2 if first_line.endswith(b"\r") else 1
        self.delim = spec.delimiter
        self.quote = spec.quote_char

    def error(self, message: str, *, row: int | None = None, column: str | None = None,
              byte_offset: int | None = None) -> SourceError:
        return SourceError(message, path=str(self.path), row=row, column=column,
                           byte_offset=byte_offset)

    def run(self) -> None:
        carry = _Carry()
        for block in _blocks(self.path, 0, None):
            batch = pl.read_csv(
                block, has_header=False, separator="\x00", quote_char=None,
                infer_schema=False, encoding="utf8-lossy", truncate_ragged_lines=True,
                empty_string_is_null=False, raise_if_empty=False)
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
        return data, _walk_record(data, ord(self.delim), ord(self.quote))

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
        with self.path.open("rb") as f:
            f.seek(row["start"])
            raw = f.readline()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            offset = row["start"] + exc.start
            prefix = _read_at(self.path, row["rec_start"], offset - row["rec_start"])
            walk = _walk_record(prefix + b"\n", ord(self.delim), ord(self.quote))
            index = len(walk.starts) - 1
            raise self.error("invalid UTF-8 (pass --encoding-errors replace to substitute "
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
