"""Record part files: the exported columns, pages decoded into typed polars frames, and
the part writer.

Exactly once: rows are buffered per range and flushed to a part file every
`rows_per_part` rows and at the end of the range; the part is written to a temp name and
renamed (`engine.outputs`), then journaled in the same transaction that moves the range's
cursor. A part file without a journal row (a crash between the rename and the commit) is
deleted on resume (`manifest.ExportFolder`) and its rows are read again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.to_thread
import polars as pl

from engine.errors import ConfigError
from engine.exports.plan import IdRange
from engine.journal import ExportJournal, ExportPart, JournalThread
from engine.normalize import epoch_ms
from engine.outputs import escape_expr, write_frame
from engine.schema import ObjectType, Property, Schema

if TYPE_CHECKING:
    from engine.exports.edges import EdgePipeline, EdgesAhead

Format = Literal["parquet", "csv"]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: str  # string | number | date | datetime | bool | multi


def column_kind(prop: Property | None) -> str:
    if prop is None:
        return "string"
    if prop.is_multi:
        return "multi"
    if prop.type in ("number", "date", "datetime", "bool"):
        return prop.type
    return "string"


def modified_property(obj: ObjectType) -> str:
    return "lastmodifieddate" if obj.type_id == "0-1" else "hs_lastmodifieddate"


def plan_columns(schema: Schema, wanted: Sequence[str] | None, modified: str) -> list[Column]:
    """The exported properties: the ones asked for, or all; the last-modified one always."""
    if wanted is None:
        names = [p.name for p in schema.properties if p.name != "hs_object_id"]
    else:
        unknown = [n for n in wanted if n not in schema]
        if unknown:
            raise ConfigError(f"{schema.object_type} has no properties {', '.join(unknown)}")
        names = list(dict.fromkeys(wanted))
    if modified not in names and modified in schema:
        names.append(modified)
    return [Column(n, column_kind(schema.get(n))) for n in names]


def decode_page(results: Sequence[dict[str, Any]], names: Sequence[str]) -> pl.DataFrame:
    """One page of records -> `id` (Int64) and one String column per property."""
    props = [r.get("properties") or {} for r in results]
    data: dict[str, pl.Series] = {
        "id": pl.Series("id", [int(r["id"]) for r in results], dtype=pl.Int64)}
    for name in names:
        data[name] = pl.Series(name, [p.get(name) for p in props], dtype=pl.String)
    return pl.DataFrame(data)


def _epoch(e: pl.Expr) -> pl.Expr:
    return epoch_ms(e, seconds_below=0)  # HubSpot's epoch values are milliseconds


def typed_expr(column: Column) -> pl.Expr:
    """A property's text as its Parquet type; values that do not parse become null."""
    e = pl.col(column.name)
    if column.kind == "number":
        return e.cast(pl.Float64, strict=False)
    if column.kind == "bool":
        return e.str.to_lowercase().replace_strict({"true": True, "false": False},
                                                   default=None, return_dtype=pl.Boolean)
    if column.kind == "datetime":
        return pl.coalesce(e.str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_unit="ms",
                                             time_zone="UTC", strict=False), _epoch(e))
    if column.kind == "date":
        return pl.coalesce(e.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False),
                           _epoch(e).dt.date())
    if column.kind == "multi":
        return e.str.split(";").list.eval(pl.element().filter(pl.element() != ""))
    return e


def shape_frame(raw: pl.DataFrame, columns: Sequence[Column], fmt: Format,
                escape: bool) -> tuple[pl.DataFrame, int]:
    """Raw text columns -> the frame to write, and how many values did not parse."""
    if fmt == "csv":
        if not escape:
            return raw, 0
        return raw.with_columns(escape_expr(c.name) for c in columns
                                if c.kind != "number"), 0
    typed = raw.with_columns(typed_expr(c).alias(c.name) for c in columns)
    checked = [c.name for c in columns if c.kind in ("number", "bool", "date", "datetime")]
    unparsed = 0
    if checked:
        counts = pl.DataFrame({n: raw[n] for n in checked}).select(
            (pl.col(n).str.len_bytes().fill_null(0) > 0).sum() for n in checked)
        nulls = typed.select(pl.col(n).is_not_null().sum() for n in checked)
        unparsed = int(sum(counts.row(0)) - sum(nulls.row(0)))
    return typed, unparsed


def write_part(path: Path, frame: pl.DataFrame, fmt: Format) -> None:
    """A part file by `engine.outputs`: temp file, fsync, rename, fsync the folder, so a
    reader sees a whole part or none and a part's journal row (synchronous=FULL) never
    outlives its data on power loss. CSV parts have CRLF line ends (RFC 4180) and are
    escaped by `shape_frame` (number columns stay as they are)."""
    write_frame(path, frame, fmt=fmt, escape=False,
                line_terminator="\r\n" if fmt == "csv" else "\n")


def count_rows(path: Path) -> int:
    """Rows of a part file (one an earlier manifest does not list)."""
    lazy = (pl.scan_parquet(path) if path.suffix == ".parquet"
            else pl.scan_csv(path, infer_schema=False))
    return int(lazy.select(pl.len()).collect().item())


def read_ids(path: Path) -> list[int]:
    """The `id` column of a record part file."""
    if path.suffix == ".parquet":
        return pl.read_parquet(path, columns=["id"])["id"].to_list()
    return pl.read_csv(path, columns=["id"], schema_overrides={"id": pl.Int64})["id"].to_list()


@dataclass(frozen=True, slots=True)
class PartLayout:
    """What a record part holds and where it goes."""

    out_dir: Path
    dataset: str  # the object's folder name
    columns: tuple[Column, ...]
    fmt: Format
    escape: bool
    modified: str  # the last-modified property

    def relative(self, part_no: int) -> str:
        return f"{self.dataset}/part-{part_no:05d}.{self.fmt}"

    def write(self, raw: pl.DataFrame, path: Path) -> tuple[str | None, int]:
        """Write one part (in a worker thread): (its latest last-modified time, unparsed)."""
        modified: str | None = None
        if self.modified in raw.columns:
            latest = raw.select(typed_expr(Column(self.modified, "datetime")).max()).item()
            if latest is not None:
                modified = latest.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        frame, unparsed = shape_frame(raw, self.columns, self.fmt, self.escape)
        write_part(path, frame, self.fmt)
        return modified, unparsed


@dataclass(slots=True)
class PartBuffer:
    """Records one range has read but not yet written, and their edges read ahead."""

    ahead: EdgesAhead
    frames: list[pl.DataFrame] = field(default_factory=list)
    rows: int = 0

    def add(self, frame: pl.DataFrame) -> None:
        if frame.height:
            self.frames.append(frame)
            self.rows += frame.height
            if self.ahead.pipeline is not None:  # associations asked for
                self.ahead.add(frame["id"].to_list())

    def take(self) -> pl.DataFrame:
        frame = pl.concat(self.frames, rechunk=True)
        self.frames = []
        self.rows = 0
        return frame


class PartWriter:
    """Numbers, writes and journals record parts; hands each part's ids to the edges."""

    def __init__(self, layout: PartLayout, journal: ExportJournal, thread: JournalThread,
                 edges: EdgePipeline, *, next_part: int, records_done: int) -> None:
        self.layout, self.edges = layout, edges
        self.journal, self.thread = journal, thread
        self.next_part = next_part  # the number of the next part written
        self.records_done = records_done  # in part files, earlier runs' included
        self.unparsed = 0  # values that did not parse as their property type

    def __repr__(self) -> str:
        return (f"PartWriter(next_part={self.next_part}, records_done={self.records_done}, "
                f"unparsed={self.unparsed})")

    def buffer(self) -> PartBuffer:
        return PartBuffer(self.edges.ahead())

    async def flush(self, r: IdRange, buffer: PartBuffer, done: bool,
                    list_cursor: bool = False) -> None:
        """Write what `buffer` holds as one part and move `r`'s cursor past it (closing
        `r` when `done`), in one journal transaction."""
        cursor = r.cursor  # an unordered list keeps its last ordered id; `after` rules
        after = r.after if list_cursor else None
        if not buffer.rows:
            if done:
                await self.thread.call(self.journal.advance, r.id, cursor, after, True, None)
            return
        edges = await buffer.ahead.collect()
        part_no = self.next_part
        self.next_part += 1
        frame = buffer.take()
        relative = self.layout.relative(part_no)
        max_modified, unparsed = await anyio.to_thread.run_sync(
            self.layout.write, frame, self.layout.out_dir / relative)
        self.unparsed += unparsed
        part = ExportPart(self.layout.dataset, part_no, r.id, relative, frame.height,
                          max_modified)
        await self.thread.call(self.journal.advance, r.id, cursor, after, done, part)
        self.records_done += frame.height
        await self.edges.send(part_no, frame["id"].to_list(), edges)
