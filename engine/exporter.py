"""Export: the scheduler that reads one object type (and its associations) into part files.

Two read budgets are used at once (ARCHITECTURE.md, "Export"):

* the list endpoint (`GET /crm/v3/objects/{type}`, 100 per page) counts against the
  rolling 10-second window and is one sequential cursor that can only start at the
  beginning of the id space;
* search (`POST .../search`, 200 per page) has its own ~5/s limit, outside the window,
  and can read any `hs_object_id` range: sorted by id, filtered `BETWEEN start AND hi-1`,
  and continued from the last id read, so no query ever meets the 10,000-result cap.

A full export starts as one range `[min id, max id]` owned by the list cursor, which
reads it upwards. Each search reader cuts a piece off the top of the largest range still open
(a share of what is left, at most `search_chunk` records), reads it, and
cuts the next: the list cursor can never be handed another range, so the search readers
eat its range from the top and the two meet in the middle, both budgets busy until the
end. The list returns records in ascending id order (the sandbox does, and HubSpot does
in practice; the documentation promises nothing): the list reader checks it on every
page, and stops at its range's (shrinking) upper bound. Should the list ever go
backwards, the reader stops trusting the order: it reads the list to its end keeping only
its own range's ids (each id still lands in exactly one range) and its range is no longer
cut.

Incremental exports (`since`) read by search only, with a `GTE` filter on the object's
last-modified property; archived exports read by the list only (search sees live records
only). The watermark written to the manifest is the time the export started (kept across
resumes): every change after it has a later last-modified time, so the next run's
`since = watermark - lookback` misses nothing; the largest last-modified value seen would
miss records changed during the export in ranges already read.

Exactly once: rows are buffered per range and flushed to a part file every
`rows_per_part` rows and at the end of the range; the part is written to a temp name and
renamed, then journaled in the same transaction that moves the range's cursor. A part
file without a journal row (a crash between the rename and the commit) is deleted on
resume and its rows are read again. Association edges are read per record part (v4 batch
read, 1,000 ids a call, following per-record paging) into an edge part with the same
number, journaled on its own.

Exporting into a folder again. Part numbers go on from the highest part already in the
object's and edge tables' folders, so no run ever overwrites another's file.

* An incremental export (`--since`, `--since-manifest DIR --out DIR`) adds its parts beside
  the earlier ones and keeps them all: the folder is the first export plus every change
  since, in part order. A record changed since an earlier run appears again in a later
  part: a warehouse keeps, per `id`, the row of the highest part number (every part of a
  run is numbered after every part of the runs before it). The manifest lists every part
  file in the folder (`files`, each with its rows and the `watermark` of the run that wrote
  it), `records`/`edges` count the rows of all of them, `runs` lists each run (watermark,
  since, first part, rows), and `watermark` is the latest run's, for the next
  `--since-manifest`.
* A full export is a new snapshot: once its manifest is written, the earlier parts of its
  datasets are deleted and the manifest lists its own files (and any other dataset's files
  an earlier manifest listed that are still there).

Until an export finishes, the folder's earlier manifest stays as it was (it still describes
the files it lists); a crash deletes only this run's unjournaled parts and temp files.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.abc
import orjson
import polars as pl

from engine import __version__
from engine.client import HubSpotClient
from engine.errors import ConfigError, EngineError
from engine.interrupt import StopRequest
from engine.journal import ExportJournal, ExportPart, ExportRange
from engine.outputs import escape_expr, write_frame, write_json
from engine.report import ProgressView
from engine.schema import ObjectType, Property, Schema, canonical_object, fetch_schema

log = logging.getLogger("hsbulk.export")

Format = Literal["parquet", "csv"]
LIST_PAGE = 100
# HubSpot refuses list URLs past about 8 KB (414 URI Too Long) and a portal's objects carry
# hundreds of properties: past this many characters of names the list cursor asks for ids
# only and reads the properties of each page by batch read (names in the body).
LIST_URL_PROPERTIES_MAX = 6_000
SEARCH_PAGE = 200
ASSOCIATION_READ_INPUTS = 1_000
MANIFEST = "_manifest.json"
ID_SPACE_END = 2**62
_EPOCH = r"^-?\d+$"
_PART = re.compile(r"^part-(\d{5,})\.(?:parquet|csv)$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_DURATION_S = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "min": 60.0, "h": 3600.0,
               "d": 86400.0}


@dataclass(frozen=True, slots=True)
class ExportSpec:
    """What to export and where. `properties` None means every property of the schema."""

    object_type: str
    out_dir: Path
    format: Format = "parquet"
    properties: tuple[str, ...] | None = None
    associations: tuple[str, ...] = ()
    since: datetime | None = None
    lookback: timedelta = timedelta(0)
    archived: bool = False
    partitions: int = 4  # concurrent search readers beside the list cursor
    escape_formulas: bool = True
    checkpoint: Path | None = None  # default OUT/.hsbulk/export-{object}.db
    rows_per_part: int = 50_000
    search_chunk: int = 10_000  # at most this many records per piece a search reader cuts

    def __post_init__(self) -> None:
        if self.format not in ("parquet", "csv"):
            raise ConfigError(f"--format must be parquet or csv, not {self.format!r}")
        if self.partitions < 0:
            raise ConfigError("--partitions must not be negative")
        if self.rows_per_part < 1:
            raise ConfigError("--rows-per-part must be at least 1")
        if self.since is not None and self.archived:
            raise ConfigError("--since reads by search, which sees no archived records: "
                              "drop --archived or --since")
        if self.lookback < timedelta(0):
            raise ConfigError("--lookback must not be negative")

    @property
    def checkpoint_path(self) -> Path:
        if self.checkpoint is not None:
            return self.checkpoint
        return self.out_dir / ".hsbulk" / f"export-{canonical_object(self.object_type)}.db"

    @property
    def since_utc(self) -> datetime | None:
        if self.since is None:
            return None
        since = self.since if self.since.tzinfo else self.since.replace(tzinfo=UTC)
        return since.astimezone(UTC) - self.lookback


@dataclass(slots=True)
class ExportSummary:
    """The run's account; `records`/`edges` count everything written, resumed runs included."""

    object: str
    out_dir: str
    format: str
    records: int = 0
    edges: dict[str, int] = field(default_factory=dict)
    parts: int = 0
    records_read: int = 0  # by this run
    api_calls: int = 0
    search_calls: int = 0
    list_calls: int = 0
    association_calls: int = 0
    http_429: int = 0
    retries: int = 0
    ranges: int = 0
    splits: int = 0
    elapsed_s: float = 0.0
    records_per_s: float = 0.0
    watermark: str | None = None
    since: str | None = None
    resumed: bool = False
    state: str = "done"
    unparsed_values: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- columns and decoding -------------------------------------------------------------


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


def _epoch_ms(e: pl.Expr) -> pl.Expr:
    return (pl.when(e.str.contains(_EPOCH)).then(e.cast(pl.Int64, strict=False))
            .cast(pl.Datetime("ms", "UTC")))


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
                                             time_zone="UTC", strict=False), _epoch_ms(e))
    if column.kind == "date":
        return pl.coalesce(e.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False),
                           _epoch_ms(e).dt.date())
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


def write_atomic(path: Path, frame: pl.DataFrame, fmt: Format) -> None:
    """A part file by `engine.outputs`: temp file, fsync, rename, fsync the folder, so a
    reader sees a whole part or none and a part's journal row (synchronous=FULL) never
    outlives its data on power loss. CSV parts have CRLF line ends (RFC 4180) and are
    escaped by `shape_frame` (number columns stay as they are)."""
    write_frame(path, frame, fmt=fmt, escape=False,
                line_terminator="\r\n" if fmt == "csv" else "\n")


def write_export_summary(path: Path, summary: ExportSummary) -> None:
    write_json(path, summary.as_dict())


def count_rows(path: Path) -> int:
    """Rows of a part file (one an earlier manifest does not list)."""
    lazy = (pl.scan_parquet(path) if path.suffix == ".parquet"
            else pl.scan_csv(path, infer_schema=False))
    return int(lazy.select(pl.len()).collect().item())


EDGE_SCHEMA: dict[str, pl.DataType] = {
    "from_id": pl.Int64(), "to_id": pl.Int64(), "type_id": pl.Int64(),
    "category": pl.String(), "label": pl.String()}


# -- ranges ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Range:
    id: int
    kind: str
    lo: int
    hi: int
    cursor: int | None  # last id read (buffered or written)
    after: str | None
    owned: bool = False
    closing: bool = False  # its reader has seen its end: never split it again
    ordered: bool = True  # list ranges: the list came back in ascending id order

    @classmethod
    def of(cls, r: ExportRange) -> _Range:
        return cls(r.id, r.kind, r.lo, r.hi, r.cursor, r.after)

    @property
    def start(self) -> int:
        return self.lo if self.cursor is None else self.cursor + 1

    @property
    def remaining(self) -> int:
        return max(0, self.hi - self.start)


class Planner:
    """Which range each reader reads next; splits the largest range for an idle reader.

    Synchronous (no awaits): a split is decided and journaled in one step, so no reader
    sees half of it. A range is split only above the last id its reader has read, and the
    reader drops ids at or above its (new) upper bound, so each id has one reader.

    Pieces are sized by measured speeds so that every reader ends at about the same time:
    a search reader gets the search budget shared by all of them (a few hundred records/s
    under 5 calls/s), so a piece cut near the end must be small enough for it to finish
    before the cursor it was cut from would have got there.
    """

    def __init__(self, ranges: Iterable[_Range], journal: ExportJournal,
                 chunk_ids: int = 4_000, min_split: int = 1_000, readers: int = 1,
                 page_ids: int = 200,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ranges = list(ranges)
        self.readers = readers
        self.journal = journal
        self.chunk_ids = max(chunk_ids, min_split)
        self.min_split = min_split
        self.page_ids = max(1, page_ids)  # ids one search page covers
        self.splits = 0
        self.clock = clock
        self.started = clock()
        self.read_by = {"list": 0, "search": 0}

    def count(self, kind: str, records: int) -> None:
        """A reader of `kind` read `records` more records (feeds the speed estimates)."""
        self.read_by[kind] += records

    def speeds(self) -> tuple[float, float] | None:
        """Records/s of the list cursor and of all search readers, once measurable."""
        elapsed = self.clock() - self.started
        if elapsed < 2.0 or not self.read_by["search"]:
            return None
        return self.read_by["list"] / elapsed, self.read_by["search"] / elapsed

    def piece(self, victim: _Range) -> int:
        """How many ids an idle search reader should cut from the top of `victim` (0: none)."""
        remaining = victim.remaining
        share = remaining // (2 * (self.readers + 1))
        floor = self.min_split
        speeds = self.speeds()
        if speeds is not None:
            list_rate, search_rate = speeds
            reading = sum(1 for r in self.ranges if r.kind == "search" and r.owned)
            per_reader = search_rate / (reading + 1)  # the budget shared once this one joins
            owner = list_rate if victim.kind == "list" else per_reader
            # Both ends finish together if the piece takes its reader no longer than the
            # rest of the victim takes everyone else.
            share = int(remaining * per_reader / (owner + search_rate + per_reader))
            floor = self.page_ids
            if share < floor // 2:
                return 0
        if remaining < 2 * floor:
            return 0
        size = min(self.chunk_ids, max(floor, share), remaining // 2)
        # Whole search pages: a piece's last page is then full too (ids are dense).
        return size - size % self.page_ids if size > self.page_ids else size

    def take_list_range(self) -> _Range | None:
        for r in self.ranges:
            if r.kind == "list" and not r.owned:
                r.owned = True
                return r
        return None

    def take_search_range(self) -> _Range | None:
        """A free search range, else a piece cut from the top of the largest range.

        The list cursor can only move up from where it is and can never be given another
        range, so search readers eat its range from the top in pieces of about
        `chunk_ids` ids (half of what is left near the end) and the two meet in the
        middle: the list cursor stays busy until the very end.
        """
        free = [r for r in self.ranges if r.kind == "search" and not r.owned]
        if free:
            best = max(free, key=lambda r: r.remaining)
            best.owned = True
            return best
        busy = [r for r in self.ranges if not r.closing and r.ordered and r.remaining > 1]
        if not busy:
            return None
        victim = max(busy, key=lambda r: r.remaining)
        size = self.piece(victim)
        if not size:
            return None
        mid = victim.hi - size
        new_id = self.journal.split(victim.id, mid)
        new = _Range(new_id, "search", mid, victim.hi, None, None, owned=True)
        victim.hi = mid
        self.ranges.append(new)
        self.splits += 1
        return new

    def finished(self, r: _Range) -> None:
        self.ranges.remove(r)


EdgeRow = tuple[int, int, int, str | None, str | None]
EdgeItem = tuple[int, list[int], dict[str, list[EdgeRow]] | None]  # part, ids, rows read ahead


@dataclass(slots=True)
class _Page:
    """One list page; `ready` (when set) is the wait for its properties' batch read."""

    data: dict[str, Any]
    ready: anyio.Event | None = None


@dataclass(slots=True)
class _Buffer:
    """Records read but not yet written, and the edges of those records read ahead."""

    frames: list[pl.DataFrame] = field(default_factory=list)
    rows: int = 0
    edge_ids: list[int] = field(default_factory=list)  # not yet asked for
    edges: dict[str, list[EdgeRow]] = field(default_factory=dict)
    pending: int = 0  # edge reads in flight
    settled: anyio.Event = field(default_factory=anyio.Event)

    def add(self, frame: pl.DataFrame) -> None:
        if frame.height:
            self.frames.append(frame)
            self.rows += frame.height

    def take(self) -> pl.DataFrame:
        frame = pl.concat(self.frames, rechunk=True)
        self.frames = []
        self.rows = 0
        return frame


# -- the export ----------------------------------------------------------------------------


class _Export:
    def __init__(self, client: HubSpotClient, spec: ExportSpec,
                 progress: ProgressView | None, stop: StopRequest | None = None) -> None:
        self.client = client
        self.stop = stop or StopRequest()
        self.spec = spec
        self.progress = progress
        self.obj = canonical_object(spec.object_type)
        self.targets = [canonical_object(t) for t in spec.associations]
        self.modified = modified_property(self.obj)
        self.columns: list[Column] = []
        self.names: list[str] = []
        self.journal: ExportJournal | None = None
        self.planner: Planner | None = None
        self.next_part = 1
        self.records_read = 0
        self.records_done = 0
        self.total: int | None = None
        self.unparsed = 0
        self.list_calls = 0
        self.association_calls = 0
        self.notes: list[str] = []
        self.edge_send: anyio.abc.ObjectSendStream[EdgeItem] | None = None
        self.edge_tasks: anyio.abc.TaskGroup | None = None

    @property
    def ext(self) -> str:
        return self.spec.format

    def dataset_dir(self, dataset: str) -> Path:
        return self.spec.out_dir / dataset

    def edge_dataset(self, target: ObjectType) -> str:
        return f"{self.obj}__{target}"

    def spec_hash(self) -> str:
        s = self.spec
        key = {"object": self.obj.type_id, "columns": [[c.name, c.kind] for c in self.columns],
               "format": s.format, "associations": [t.type_id for t in self.targets],
               "since": s.since_utc.isoformat() if s.since_utc else None,
               "archived": s.archived, "escape": s.escape_formulas,
               "base_url": self.client.settings.base_url}
        return hashlib.sha256(orjson.dumps(key)).hexdigest()

    # -- run --------------------------------------------------------------------------

    async def run(self) -> ExportSummary:
        started = time.monotonic()
        spec = self.spec
        if spec.archived and self.targets:
            raise ConfigError("associations of archived records cannot be read: drop "
                              "--associations or --archived")
        schema = await fetch_schema(self.client, self.obj)
        self.columns = plan_columns(schema, spec.properties, self.modified)
        self.names = [c.name for c in self.columns]
        journal = self.journal = ExportJournal(spec.checkpoint_path)
        try:
            now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            resumed, watermark = journal.open(self.spec_hash(), now)
            if journal.get("state") == "PLANNING":
                self.remove_orphans()
                await self.plan()
            else:
                self.remove_orphans()
                self.total = int(journal.get("total") or 0) or None
            parts = journal.parts(str(self.obj))
            self.records_done = sum(p.rows for p in parts)
            self.next_part = max((p.part for p in journal.parts()),
                                 default=self.first_part - 1) + 1
            ranges = [_Range.of(r) for r in journal.ranges() if r.state == "OPEN"]
            density = float(journal.get("density") or 1.0)
            self.planner = Planner(ranges, journal,
                                   chunk_ids=int(spec.search_chunk / max(density, 1e-6)),
                                   readers=max(1, spec.partitions),
                                   page_ids=int(SEARCH_PAGE / max(density, 1e-6)))
            if self.progress is not None:
                self.progress.start(f"export {self.obj}", self.total,
                                    done_before=self.records_done, unit="records")
            with self.stop.hard_scope(on_request=True):  # parts are whole or absent
                await self.read_all(parts)
            if self.stop.requested:
                return self.stopped(resumed, time.monotonic() - started)
            summary = self.finish(watermark, resumed, time.monotonic() - started)
            journal.set_state("DONE")
            return summary
        finally:
            if self.progress is not None:
                self.progress.stop()
            journal.close()

    @property
    def datasets(self) -> list[str]:
        return [str(self.obj), *(self.edge_dataset(t) for t in self.targets)]

    def part_files(self) -> list[tuple[str, int]]:
        """(path relative to the output folder, part number) of every part file on disk in
        this export's dataset folders, earlier exports' included."""
        found = []
        for dataset in self.datasets:
            folder = self.dataset_dir(dataset)
            if folder.is_dir():
                found += [(f"{dataset}/{item.name}", int(match.group(1)))
                          for item in folder.iterdir() if (match := _PART.match(item.name))]
        return sorted(found)

    def remove_orphans(self) -> None:
        """Delete temp files, and this export's part files that the journal does not know
        (a crash between a rename and its commit); never an earlier export's parts.

        A new export numbers its parts after every part already in its folders: the first
        number is journaled, so a resumed export keeps it and knows its own parts.
        """
        assert self.journal is not None
        journaled = self.journal.parts()
        first = self.journal.get("first_part")
        if first is None:
            on_disk = max((number for _, number in self.part_files()), default=0)
            first = str(min((p.part for p in journaled), default=on_disk + 1))
            self.journal.set("first_part", first)
        self.first_part = int(first)
        known = {p.path for p in journaled if p.path}
        for dataset in self.datasets:
            folder = self.dataset_dir(dataset)
            if folder.is_dir():
                for item in folder.iterdir():
                    if item.name.startswith(".part-") and ".tmp" in item.name:
                        item.unlink(missing_ok=True)
        for relative, number in self.part_files():
            if number >= self.first_part and relative not in known:
                (self.spec.out_dir / relative).unlink(missing_ok=True)

    async def plan(self) -> None:
        """Find the id bounds and journal the first ranges."""
        assert self.journal is not None
        spec = self.spec
        if spec.archived:
            self.journal.plan([("list", 0, ID_SPACE_END)])
            return
        low, total = await self.probe(ascending=True)
        if low is None:
            self.journal.set("total", "0")
            self.journal.plan([])
            self.total = 0
            return
        high, _ = await self.probe(ascending=False)
        assert high is not None
        self.total = total
        self.journal.set("total", str(total))
        lo, hi = low, high + 1
        self.journal.set("density", str(total / (hi - lo)))
        incremental = spec.since is not None
        # A full export starts as one list range that search readers cut pieces from;
        # an incremental one as equal search ranges.
        pieces = max(1, spec.partitions) if incremental else 1
        width = max(1, -(-(hi - lo) // pieces))
        bounds = [(lo + i * width, min(hi, lo + (i + 1) * width)) for i in range(pieces)]
        bounds = [(a, b) for a, b in bounds if a < b]
        kinds = ["search" if incremental or i else "list" for i in range(len(bounds))]
        self.journal.plan([(k, a, b) for k, (a, b) in zip(kinds, bounds, strict=True)])

    def since_filters(self) -> list[dict[str, str]]:
        since = self.spec.since_utc
        if since is None:
            return []
        return [{"propertyName": self.modified, "operator": "GTE",
                 "value": str(int(since.timestamp() * 1000))}]

    async def probe(self, *, ascending: bool) -> tuple[int | None, int]:
        body: dict[str, Any] = {
            "sorts": [{"propertyName": "hs_object_id",
                       "direction": "ASCENDING" if ascending else "DESCENDING"}],
            "properties": ["hs_object_id"], "limit": 1}
        filters = self.since_filters()
        if filters:
            body["filterGroups"] = [{"filters": filters}]
        data = (await self.client.post_json(self.search_path, body, search=True)).json()
        results = data.get("results") or []
        total = int(data.get("total") or 0)
        return (int(results[0]["id"]) if results else None), total

    @property
    def search_path(self) -> str:
        return f"/crm/v3/objects/{self.obj.path_name}/search"

    async def read_all(self, parts: list[ExportPart]) -> None:
        assert self.planner is not None
        spec = self.spec
        list_range = self.planner.take_list_range()
        searchers = 0 if spec.archived else (
            max(1, spec.partitions) if spec.since is not None else spec.partitions)
        backlog = self.edge_backlog(parts)
        async with anyio.create_task_group() as tg:
            receive = None
            if self.targets:
                send, receive = anyio.create_memory_object_stream[EdgeItem](4)
                self.edge_send = send
                self.edge_tasks = tg
                async with receive:
                    for _ in range(2):
                        tg.start_soon(self.edge_worker, receive.clone())
            async with anyio.create_task_group() as readers:
                if backlog:
                    readers.start_soon(self.send_backlog, backlog)
                if list_range is not None:
                    readers.start_soon(self.list_reader, list_range)
                for _ in range(searchers):
                    readers.start_soon(self.search_reader)
            if self.edge_send is not None:
                await self.edge_send.aclose()

    def edge_backlog(self, parts: list[ExportPart]) -> list[tuple[int, list[int]]]:
        """Record parts of an earlier run whose edge parts were not all written."""
        assert self.journal is not None
        if not self.targets:
            return []
        done: dict[int, int] = {}
        for t in self.targets:
            for p in self.journal.parts(self.edge_dataset(t)):
                done[p.part] = done.get(p.part, 0) + 1
        out = []
        for p in parts:
            if done.get(p.part, 0) < len(self.targets) and p.path:
                path = self.spec.out_dir / p.path
                if self.spec.format == "parquet":
                    ids = pl.read_parquet(path, columns=["id"])["id"]
                else:
                    ids = pl.read_csv(path, columns=["id"], schema_overrides={"id": pl.Int64})[
                        "id"]
                out.append((p.part, ids.to_list()))
        return out

    async def send_backlog(self, backlog: list[tuple[int, list[int]]]) -> None:
        assert self.edge_send is not None
        for part_no, ids in backlog:
            await self.edge_send.send((part_no, ids, None))

    # -- readers ------------------------------------------------------------------------

    async def search_reader(self) -> None:
        assert self.planner is not None
        while (r := self.planner.take_search_range()) is not None:
            await self.read_search_range(r)
            self.planner.finished(r)

    async def read_search_range(self, r: _Range) -> None:
        assert self.planner is not None
        buffer = _Buffer()
        filters = self.since_filters()
        while True:
            start = r.start
            done = start >= r.hi
            if not done:
                body = {
                    "filterGroups": [{"filters": [
                        {"propertyName": "hs_object_id", "operator": "BETWEEN",
                         "value": str(start), "highValue": str(r.hi - 1)}, *filters]}],
                    "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                    "properties": self.names, "limit": SEARCH_PAGE}
                data = (await self.client.post_json(self.search_path, body, search=True)).json()
                results: list[dict[str, Any]] = data.get("results") or []
                ids = [int(x["id"]) for x in results]
                if any(b <= a for a, b in itertools.pairwise(ids)) or (
                        ids and ids[0] < start):
                    raise EngineError(f"search on {self.obj} did not return ids in ascending "
                                      "order from the requested bound; cannot page safely")
                hi = r.hi  # may have shrunk while the call was out
                kept = sum(1 for i in ids if i < hi)
                done = len(results) < SEARCH_PAGE or kept < len(results)
                if kept:
                    buffer.add(decode_page(results[:kept], self.names))
                    self.read_edges_ahead(buffer, ids[:kept])
                    r.cursor = ids[kept - 1]
                    self.records_read += kept
                    self.planner.count("search", kept)
            if done:
                r.closing = True
            if done or buffer.rows >= self.spec.rows_per_part:
                await self.flush(r, buffer, done)
            self.report_progress()
            if done:
                return

    async def list_reader(self, r: _Range) -> None:
        """The list cursor: one page ahead in flight while the last one is decoded, so the
        sequential cursor runs at the speed of the network alone."""
        pages, receive = anyio.create_memory_object_stream[_Page](1)
        with receive:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._list_pages, r.after, pages)
                try:
                    await self._read_list_pages(r, receive)
                finally:
                    tg.cancel_scope.cancel()  # a page fetched past the end is not needed
        assert self.planner is not None
        self.planner.finished(r)

    async def _list_pages(self, after: str | None,
                          pages: anyio.abc.ObjectSendStream[_Page]) -> None:
        path = f"/crm/v3/objects/{self.obj.path_name}"
        props = ",".join(self.names)
        wide = len(props) > LIST_URL_PROPERTIES_MAX
        archived = "true" if self.spec.archived else "false"
        async with pages, anyio.create_task_group() as reads:
            while True:
                params: dict[str, str | int] = {
                    "limit": LIST_PAGE, "properties": "hs_object_id" if wide else props,
                    "archived": archived}
                if after is not None:
                    params["after"] = after
                data = await self.client.get_json(path, params)
                self.list_calls += 1
                page = _Page(data)
                if wide:
                    page.ready = anyio.Event()
                    reads.start_soon(self._read_page_properties, page)
                await pages.send(page)
                after = ((data.get("paging") or {}).get("next") or {}).get("after")
                if after is None:
                    return
                after = str(after)

    async def _read_page_properties(self, page: _Page) -> None:
        """Replace a page of bare ids by the same records, in the same order, with every
        property (a record archived in between is left out, as a later list would)."""
        assert page.ready is not None
        ids = [str(r["id"]) for r in page.data.get("results") or ()]
        if ids:
            body = orjson.dumps({"properties": self.names, "inputs": [{"id": i} for i in ids]})
            answer = await self.client.request(
                "POST", f"/crm/v3/objects/{self.obj.path_name}/batch/read", body=body,
                params={"archived": "true"} if self.spec.archived else None)
            self.list_calls += 1
            found = {str(r["id"]): r for r in (answer.json() or {}).get("results") or ()}
            page.data["results"] = [found[i] for i in ids if i in found]
        page.ready.set()

    async def _read_list_pages(self, r: _Range,
                               pages: anyio.abc.ObjectReceiveStream[_Page]) -> None:
        assert self.planner is not None
        buffer = _Buffer()
        last_seen = r.cursor if r.cursor is not None else -1
        done = False
        while not done:
            page = await pages.receive()
            if page.ready is not None:
                await page.ready.wait()
            data = page.data
            results: list[dict[str, Any]] = data.get("results") or []
            ids = [int(x["id"]) for x in results]
            if (r.ordered and any(i <= last_seen for i in ids)) or any(
                    b <= a for a, b in itertools.pairwise(ids)):
                if r.ordered:
                    log.warning("the list of %s is not in id order: reading it to the end",
                                self.obj)
                    self.notes.append("list not in id order: list cursor read to the end")
                r.ordered = False
            last_seen = max([last_seen, *ids])
            lo, hi = r.lo, r.hi
            keep = [i for i, x in enumerate(ids) if lo <= x < hi]
            after = ((data.get("paging") or {}).get("next") or {}).get("after")
            done = after is None or (r.ordered and any(x >= hi for x in ids))
            if keep:
                buffer.add(decode_page([results[i] for i in keep], self.names))
                self.read_edges_ahead(buffer, [ids[i] for i in keep])
                if r.ordered:
                    r.cursor = ids[keep[-1]]
                self.records_read += len(keep)
                self.planner.count("list", len(keep))
            r.after = None if after is None else str(after)
            if done:
                r.closing = True
            if done or buffer.rows >= self.spec.rows_per_part:
                await self.flush(r, buffer, done, list_cursor=True)
            self.report_progress()

    async def flush(self, r: _Range, buffer: _Buffer, done: bool,
                    list_cursor: bool = False) -> None:
        assert self.journal is not None
        cursor = r.cursor  # an unordered list keeps its last ordered id; `after` rules
        after = r.after if list_cursor else None
        if not buffer.rows:
            if done:
                self.journal.advance(r.id, cursor, after, True, None)
            return
        edges = await self.edges_read_ahead(buffer)
        part_no = self.next_part
        self.next_part += 1
        frame = buffer.take()
        relative = f"{self.obj}/part-{part_no:05d}.{self.ext}"
        max_modified, unparsed = await anyio.to_thread.run_sync(
            self.write_records, frame, self.spec.out_dir / relative)
        self.unparsed += unparsed
        part = ExportPart(str(self.obj), part_no, r.id, relative, frame.height, max_modified)
        self.journal.advance(r.id, cursor, after, done, part)
        self.records_done += frame.height
        if self.edge_send is not None:
            await self.edge_send.send((part_no, frame["id"].to_list(), edges))

    def write_records(self, raw: pl.DataFrame, path: Path) -> tuple[str | None, int]:
        modified: str | None = None
        if self.modified in raw.columns:
            latest = raw.select(typed_expr(Column(self.modified, "datetime")).max()).item()
            if latest is not None:
                modified = latest.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        frame, unparsed = shape_frame(raw, self.columns, self.spec.format,
                                      self.spec.escape_formulas)
        write_atomic(path, frame, self.spec.format)
        return modified, unparsed

    def report_progress(self) -> None:
        if self.progress is None:
            return
        stats = self.client.stats
        self.progress.update_export(read=self.records_read, written=self.records_done,
                                    parts=self.next_part - self.first_part, total=self.total,
                                    retries=stats.retries, http_429=stats.http_429,
                                    description=f"export {self.obj}")

    # -- associations ---------------------------------------------------------------------

    def read_edges_ahead(self, buffer: _Buffer, ids: list[int], *, all_ids: bool = False
                         ) -> None:
        """Start reading the edges of records just read, a full batch read at a time, so a
        part's edges are in hand when the part is written and no reads trail the export."""
        if self.edge_tasks is None or not self.targets:
            return
        buffer.edge_ids.extend(ids)
        while len(buffer.edge_ids) >= ASSOCIATION_READ_INPUTS or (all_ids and buffer.edge_ids):
            chunk = buffer.edge_ids[:ASSOCIATION_READ_INPUTS]
            del buffer.edge_ids[:ASSOCIATION_READ_INPUTS]
            for target in self.targets:
                if not buffer.pending:
                    buffer.settled = anyio.Event()
                buffer.pending += 1
                self.edge_tasks.start_soon(self._read_ahead, buffer, chunk, target)

    async def _read_ahead(self, buffer: _Buffer, ids: list[int], target: ObjectType) -> None:
        rows = await self.read_edges(ids, target)
        buffer.edges.setdefault(self.edge_dataset(target), []).extend(rows)
        buffer.pending -= 1
        if not buffer.pending:
            buffer.settled.set()

    async def edges_read_ahead(self, buffer: _Buffer) -> dict[str, list[EdgeRow]] | None:
        """The edges of every record in `buffer`, read ahead; None without associations."""
        if self.edge_tasks is None or not self.targets:
            return None
        self.read_edges_ahead(buffer, [], all_ids=True)
        if buffer.pending:
            await buffer.settled.wait()
        edges, buffer.edges = buffer.edges, {}
        return edges

    async def edge_worker(self, receive: anyio.abc.ObjectReceiveStream[EdgeItem]) -> None:
        async with receive:
            async for part_no, ids, edges in receive:
                for target in self.targets:
                    dataset = self.edge_dataset(target)
                    rows = (edges.get(dataset, []) if edges is not None
                            else await self.read_edges(ids, target))
                    await self.write_edges(part_no, dataset, rows)

    async def read_edges(self, ids: list[int], target: ObjectType) -> list[EdgeRow]:
        """Every edge of `ids` to `target`, following each record's paging."""
        rows: list[EdgeRow] = []
        path = f"/crm/v4/associations/{self.obj.path_name}/{target.path_name}/batch/read"
        pending: list[dict[str, str]] = [{"id": str(i)} for i in ids]
        slots = anyio.CapacityLimiter(4)

        async def read(chunk: list[dict[str, str]], follow: list[dict[str, str]]) -> None:
            async with slots:
                answer = (await self.client.post_json(path, {"inputs": chunk})).json()
            self.association_calls += 1
            for item in answer.get("results") or []:
                from_id = int(item["from"]["id"])
                rows.extend((from_id, int(to["toObjectId"]), int(kind["typeId"]),
                             kind.get("category"), kind.get("label"))
                            for to in item.get("to") or []
                            for kind in to.get("associationTypes") or [])
                after = ((item.get("paging") or {}).get("next") or {}).get("after")
                if after:
                    follow.append({"id": str(from_id), "after": str(after)})

        while pending:
            follow: list[dict[str, str]] = []
            async with anyio.create_task_group() as tg:
                for start in range(0, len(pending), ASSOCIATION_READ_INPUTS):
                    tg.start_soon(read, pending[start : start + ASSOCIATION_READ_INPUTS],
                                  follow)
            pending = follow
        return rows

    async def write_edges(self, part_no: int, dataset: str, rows: list[EdgeRow]) -> None:
        assert self.journal is not None
        relative: str | None = None
        if rows:
            relative = f"{dataset}/part-{part_no:05d}.{self.ext}"
            frame = pl.DataFrame(rows, schema=EDGE_SCHEMA, orient="row")
            await anyio.to_thread.run_sync(write_atomic, self.spec.out_dir / relative, frame,
                                           self.spec.format)
        self.journal.add_part(ExportPart(dataset, part_no, None, relative, len(rows), None))

    # -- the end ----------------------------------------------------------------------------

    def stopped(self, resumed: bool, elapsed_s: float) -> ExportSummary:
        """The account of an export stopped before the end (no manifest: not finished)."""
        assert self.journal is not None
        parts = self.journal.parts()
        stats = self.client.stats
        return ExportSummary(
            object=str(self.obj), out_dir=str(self.spec.out_dir), format=self.spec.format,
            records=sum(p.rows for p in parts if p.dataset == str(self.obj)),
            parts=len([p for p in parts if p.path]), records_read=self.records_read,
            api_calls=stats.api_calls, search_calls=stats.search_calls,
            list_calls=self.list_calls, association_calls=self.association_calls,
            http_429=stats.http_429, retries=stats.retries, elapsed_s=round(elapsed_s, 3),
            resumed=resumed, state="stopped", notes=[f"stopped: {self.stop.reason}"])

    def earlier_manifest(self) -> dict[str, Any]:
        """The manifest an earlier export left in the folder ({} if none or unreadable)."""
        try:
            earlier = orjson.loads((self.spec.out_dir / MANIFEST).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}
        return earlier if isinstance(earlier, dict) else {}

    def kept_files(self, earlier: dict[str, Any]) -> list[dict[str, Any]]:
        """The earlier exports' files that stay in the folder after this one.

        An incremental export (`since`) keeps every earlier part of its datasets (numbered
        before its own); a full export replaces them (`remove_replaced`). Files of other
        datasets that the earlier manifest lists and that are still there stay listed.
        """
        listed = {str(f.get("path")): f for f in earlier.get("files") or ()
                  if isinstance(f, dict) and f.get("path")}
        ours = set(self.datasets)
        kept = [f for path, f in listed.items()
                if f.get("dataset") not in ours and (self.spec.out_dir / path).is_file()]
        if self.spec.since is not None:
            kept += [listed.get(relative) or {
                "dataset": relative.split("/")[0], "path": relative,
                "rows": count_rows(self.spec.out_dir / relative)}
                for relative, number in self.part_files() if number < self.first_part]
        return kept

    def remove_replaced(self) -> None:
        """A full export replaces the earlier parts of its datasets: deleted once the new
        manifest (which no longer lists them) is in place."""
        for relative, number in self.part_files():
            if number < self.first_part:
                (self.spec.out_dir / relative).unlink(missing_ok=True)

    def write_manifest(self, watermark: str, since: str | None, parts: list[ExportPart]
                       ) -> None:
        """`_manifest.json`: what the folder holds after this export (see the module
        docstring, "Exporting into a folder again")."""
        spec = self.spec
        earlier = self.earlier_manifest()
        incremental = spec.since is not None
        this_run = [{"dataset": p.dataset, "path": p.path, "rows": p.rows,
                     "watermark": watermark} for p in parts if p.path]
        files = sorted(self.kept_files(earlier) + this_run,
                       key=lambda f: (str(f.get("dataset")), str(f.get("path"))))
        modified = [p.max_modified for p in parts
                    if p.dataset == str(self.obj) and p.max_modified]
        if incremental and earlier.get("max_modified_seen"):
            modified.append(str(earlier["max_modified_seen"]))
        runs = [r for r in earlier.get("runs") or () if isinstance(r, dict)
                and r.get("watermark") != watermark] if incremental else []
        if incremental and not runs and earlier.get("watermark"):
            runs.append({"watermark": earlier["watermark"], "since": earlier.get("since"),
                         "records": earlier.get("records")})
        runs.append({
            "watermark": watermark, "since": since, "full": not incremental,
            "first_part": self.first_part,
            "records": sum(p.rows for p in parts if p.dataset == str(self.obj)),
            "edges": {str(t): sum(p.rows for p in parts if p.dataset == self.edge_dataset(t))
                      for t in self.targets}})
        write_json(spec.out_dir / MANIFEST, {
            "object": str(self.obj), "object_type_id": self.obj.type_id,
            "format": spec.format, "hsbulk": __version__,
            "columns": {"id": "id", **{c.name: c.kind for c in self.columns}},
            "properties": self.names, "associations": [str(t) for t in self.targets],
            "archived": spec.archived, "since": since,
            "lookback_s": spec.lookback.total_seconds(), "modified_property": self.modified,
            "watermark": watermark, "max_modified_seen": max(modified, default=None),
            "records": sum(int(f.get("rows") or 0) for f in files
                           if f.get("dataset") == str(self.obj)),
            "edges": {str(t): sum(int(f.get("rows") or 0) for f in files
                                  if f.get("dataset") == self.edge_dataset(t))
                      for t in self.targets},
            "csv_formulas_escaped": spec.format == "csv" and spec.escape_formulas,
            "runs": runs, "files": files,
        })
        if not incremental:
            self.remove_replaced()

    def finish(self, watermark: str, resumed: bool, elapsed_s: float) -> ExportSummary:
        assert self.journal is not None and self.planner is not None
        spec = self.spec
        parts = self.journal.parts()
        records = [p for p in parts if p.dataset == str(self.obj)]
        edges = {str(t): sum(p.rows for p in parts if p.dataset == self.edge_dataset(t))
                 for t in self.targets}
        since = spec.since_utc.isoformat().replace("+00:00", "Z") if spec.since_utc else None
        self.write_manifest(watermark, since, parts)
        stats = self.client.stats
        summary = ExportSummary(
            object=str(self.obj), out_dir=str(spec.out_dir), format=spec.format,
            records=sum(p.rows for p in records), edges=edges,
            parts=len([p for p in parts if p.path]),
            records_read=self.records_read, api_calls=stats.api_calls,
            search_calls=stats.search_calls, list_calls=self.list_calls,
            association_calls=self.association_calls, http_429=stats.http_429,
            retries=stats.retries, ranges=len(self.journal.ranges()),
            splits=self.planner.splits, elapsed_s=round(elapsed_s, 3),
            records_per_s=round(self.records_read / elapsed_s, 1) if elapsed_s > 0 else 0.0,
            watermark=watermark, since=since, resumed=resumed,
            unparsed_values=self.unparsed, notes=self.notes)
        if self.unparsed:
            summary.notes.append(f"{self.unparsed} values did not parse as their property "
                                 "type and were written as null")
        return summary


async def run_export(client: HubSpotClient, spec: ExportSpec, *,
                     progress: ProgressView | None = None,
                     stop: StopRequest | None = None) -> ExportSummary:
    """Export `spec.object_type` (and its associations) into `spec.out_dir`; resumable.

    `stop`: asked to stop, the export stops at once (every part file is whole or absent,
    and journaled) and returns a summary in state "stopped"; the manifest is written only
    by a finished export."""
    return await _Export(client, spec, progress, stop).run()


# -- command line ---------------------------------------------------------------------------


def parse_since(text: str) -> datetime:
    """ISO 8601 (naive = UTC) or epoch milliseconds."""
    raw = text.strip()
    try:
        if re.fullmatch(r"-?\d{10,}", raw):
            return datetime.fromtimestamp(int(raw) / 1000, UTC)
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--since {text!r} is not an ISO 8601 time or epoch ms") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_duration(text: str) -> timedelta:
    """`10m`, `30s`, `2h`, `1d`, `500ms` (a bare number is seconds)."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"--lookback {text!r} is not a duration such as 10m, 30s or 2h")
    return timedelta(seconds=float(match.group(1)) * _DURATION_S[match.group(2)])


def watermark_of(folder: Path) -> datetime:
    """The watermark a previous export wrote into FOLDER/_manifest.json."""
    path = folder / MANIFEST
    try:
        manifest = orjson.loads(path.read_bytes())
        return parse_since(str(manifest["watermark"]))
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"--since-manifest: no watermark in {path} ({exc})") from None


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """`export TYPE --out DIR ...` (connection flags, --checkpoint, --summary come from cli)."""
    parser.add_argument("object_type", metavar="TYPE",
                        help="object to export: contacts, companies, 0-3, 2-123, ...")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder: DIR/TYPE/part-*.{parquet,csv}, "
                        "DIR/TYPE__TO/ edge tables, DIR/_manifest.json")
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet",
                        help="part file format (default parquet)")
    parser.add_argument("--properties", default="all", metavar="a,b|all",
                        help="properties to export (default all)")
    parser.add_argument("--associations", default="", metavar="companies,deals",
                        help="also write the association edges to these object types")
    since = parser.add_mutually_exclusive_group()
    since.add_argument("--since", metavar="ISO",
                       help="only records modified at or after this time (search-based)")
    since.add_argument("--since-manifest", type=Path, metavar="DIR",
                       help="continue from the watermark of a previous export in DIR")
    parser.add_argument("--lookback", default="0s", metavar="DURATION",
                        help="subtract this from --since, e.g. 10m (default 0)")
    parser.add_argument("--archived", action="store_true",
                        help="export archived records instead of live ones (list only)")
    parser.add_argument("--partitions", type=int, default=4, metavar="N",
                        help="search readers beside the list cursor (default 4; 0: list only)")
    parser.add_argument("--rows-per-part", type=int, default=50_000, metavar="N",
                        help="rows per part file (default 50000; bounds memory)")
    parser.add_argument("--no-escape-formulas", action="store_true",
                        help="CSV: keep cells starting with = + - @ tab CR LF as they are")


def export_spec_from_args(args: argparse.Namespace) -> ExportSpec:
    since = parse_since(args.since) if args.since else None
    if args.since_manifest is not None:
        since = watermark_of(args.since_manifest)
    props = None if args.properties.strip().lower() in ("", "all") else tuple(
        p.strip() for p in args.properties.split(",") if p.strip())
    return ExportSpec(
        object_type=str(canonical_object(args.object_type)), out_dir=args.out,
        format=args.format, properties=props,
        associations=tuple(str(canonical_object(a)) for a in args.associations.split(",")
                           if a.strip()),
        since=since, lookback=parse_duration(args.lookback), archived=args.archived,
        partitions=args.partitions, escape_formulas=not args.no_escape_formulas,
        checkpoint=getattr(args, "checkpoint", None), rows_per_part=args.rows_per_part)
