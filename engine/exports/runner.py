"""The export of one object type: wiring only (plan, read, write parts and edges, finish).

A full export starts its list cursor at once, over the whole id space, while two probes
(lowest and highest id, by search) find where the ids end; only then do the search readers
cut pieces off the top: however slow search answers, the export is never slower than the
list cursor alone. Incremental exports (`since`) read by search only, with a `GTE` filter
on the object's last-modified property; archived exports read by the list only (search
sees live records only). The watermark written to the manifest is the time the export
started (kept across resumes): every change after it has a later last-modified time, so
the next run's `since = watermark - lookback` misses nothing.

Every journal call goes through one `JournalThread`: the event loop never waits on an
fsync.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime

import anyio
import anyio.to_thread
import orjson

from engine.client import HubSpotClient
from engine.errors import ConfigError
from engine.exports.edges import EdgePipeline, EdgeReader, edge_dataset
from engine.exports.manifest import (
    ExportFolder,
    ExportRun,
    claim_first_part,
    manifest_header,
    write_manifest,
)
from engine.exports.parts import (
    Column,
    PartLayout,
    PartWriter,
    modified_property,
    plan_columns,
    read_ids,
)
from engine.exports.plan import ID_SPACE_END, IdRange, Planner, SplitLog, incremental_ranges
from engine.exports.readers import SEARCH_PAGE, ListReader, Reading, ReadTarget, SearchReader
from engine.exports.spec import ExportSpec, ExportSummary
from engine.interrupt import StopRequest
from engine.journal import ExportJournal, ExportPart, ExportState, JournalThread, RangeState
from engine.report import Progress
from engine.schema import ObjectType, canonical_object, fetch_schema


def _utc_text(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def run_export(client: HubSpotClient, spec: ExportSpec, *,
                     progress: Progress | None = None,
                     stop: StopRequest | None = None) -> ExportSummary:
    """Export `spec.object_type` (and its associations) into `spec.out_dir`; resumable.

    `stop`: asked to stop, the export stops at once (every part file is whole or absent,
    and journaled) and returns a summary in state "stopped"; the manifest is written only
    by a finished export."""
    obj = canonical_object(spec.object_type)
    targets = [canonical_object(t) for t in spec.associations]
    if spec.archived and targets:
        raise ConfigError("associations of archived records cannot be read: export either "
                          "archived records or associations")
    schema = await fetch_schema(client, obj)
    columns = plan_columns(schema, spec.properties, modified_property(obj))
    thread = JournalThread()
    with anyio.CancelScope(shield=True):  # opened means closed below
        journal = await thread.call(ExportJournal, spec.checkpoint_path)
    export = _Export(client, spec, obj, targets, columns, journal, thread, progress,
                     stop or StopRequest())
    try:
        return await export.run()
    finally:
        if progress is not None:
            progress.stop()
        with anyio.CancelScope(shield=True):  # also when the host cancelled the export
            await thread.call(journal.close)


class _Export:
    """One export run: open or resume the journal, plan, read, finish."""

    def __init__(self, client: HubSpotClient, spec: ExportSpec, obj: ObjectType,
                 targets: list[ObjectType], columns: list[Column], journal: ExportJournal,
                 thread: JournalThread, progress: Progress | None, stop: StopRequest) -> None:
        self.client, self.spec, self.stop, self.progress = client, spec, stop, progress
        self.obj, self.targets, self.columns = obj, targets, columns
        self.journal, self.thread, self.call = journal, thread, thread.call
        self.edge_datasets = {str(t): edge_dataset(obj, t) for t in targets}
        self.folder = ExportFolder(spec.out_dir, str(obj), tuple(self.edge_datasets.values()))
        since = spec.since_utc
        self.target = ReadTarget(
            client, obj, tuple(c.name for c in columns),
            filters=() if since is None else ({
                "propertyName": modified_property(obj), "operator": "GTE",
                "value": str(int(since.timestamp() * 1000))},),
            archived=spec.archived, rows_per_part=spec.rows_per_part)
        self.started = time.monotonic()
        self.total: int | None = None  # the records to read, once the probes have answered

    def __repr__(self) -> str:
        return f"_Export({self.obj} -> {self.spec.out_dir})"

    def spec_hash(self) -> str:
        s = self.spec
        key = {"object": self.obj.type_id, "columns": [[c.name, c.kind] for c in self.columns],
               "format": s.format, "associations": [t.type_id for t in self.targets],
               "since": s.since_utc.isoformat() if s.since_utc else None,
               "archived": s.archived, "escape": s.escape_formulas,
               "base_url": self.client.settings.base_url}
        return hashlib.sha256(orjson.dumps(key)).hexdigest()

    async def run(self) -> ExportSummary:
        journal = self.journal
        resumed, watermark = await self.call(journal.open, self.spec_hash(),
                                             _utc_text(datetime.now(UTC)))
        first_part = await self.call(claim_first_part, journal, self.folder)
        if await self.call(journal.state) == ExportState.PLANNING:
            self.total = await self.plan()
        else:
            planned: str | None = await self.call(journal.get, "total")
            self.total = int(planned or 0) or None
        parts = await self.call(journal.parts)
        reading = await self.reading(parts, first_part)
        list_reader = ListReader(reading)
        with self.stop.hard_scope(on_request=True):  # parts are whole or absent
            await self.read(reading, list_reader, parts)
        summary = self.account(await self.call(journal.parts), reading, list_reader, resumed)
        if self.stop.requested:
            summary.state = "stopped"
            summary.notes = [f"stopped: {self.stop.reason}"]
            return summary
        await self.finish(summary, reading, watermark, first_part)
        await self.call(journal.finish)
        return summary

    async def plan(self) -> int | None:
        """Journal the first ranges; the records to read (None: not known yet). A full
        export's list cursor reads the whole id space until the probes bound it."""
        if self.spec.since is None:
            await self.call(self.journal.plan, [("list", 0, ID_SPACE_END)],
                            0 if self.spec.archived else None, None)
            return 0 if self.spec.archived else None
        found = await self.probe()
        if found is None:
            await self.call(self.journal.plan, [], 0, None)
            return 0
        lo, hi, total = found
        ranges = incremental_ranges(lo, hi, self.spec.partitions)
        await self.call(self.journal.plan, ranges, total, total / (hi - lo))
        return total

    async def probe(self) -> tuple[int, int, int] | None:
        """The ids [lo, hi) holding the records to read, and how many there are (None:
        no record)."""
        found: dict[bool, tuple[int | None, int]] = {}

        async def probe(ascending: bool) -> None:
            found[ascending] = await self.target.probe(ascending=ascending)

        async with anyio.create_task_group() as tg:  # both ends at once: one latency
            for ascending in (True, False):
                tg.start_soon(probe, ascending)
        (low, total), (high, _) = found[True], found[False]
        if low is None or high is None:
            return None
        return low, high + 1, total

    async def bound(self, reading: Reading) -> None:
        """Probe where the ids end, bound the ranges over the whole id space (journaled
        with the total) and let the search readers cut pieces."""
        planner = reading.planner
        asked = planner.clock()
        found = await self.probe()
        planner.paged(planner.clock() - asked)  # a first measure of a search page's time
        end, total, density = (0, 0, None) if found is None else (
            found[1], found[2], found[2] / (found[1] - found[0]))
        chunk_ids, page_ids = self.piece_ids(density)
        ends = planner.bound(end, chunk_ids=chunk_ids, page_ids=page_ids)
        await self.call(self.journal.bound, ends, total, density)
        self.total = total
        reading.bounded.set()

    def piece_ids(self, density: float | None) -> tuple[int, int]:
        """The ids of the largest piece a search reader cuts, and of one search page."""
        density = max(density or 1.0, 1e-6)
        return int(self.spec.search_chunk / density), int(SEARCH_PAGE / density)

    async def reading(self, parts: list[ExportPart], first_part: int) -> Reading:
        """The planner over the open ranges, the part writer, and progress reports."""
        journal, spec = self.journal, self.spec
        ranges = await self.call(journal.ranges)
        stored: str | None = await self.call(journal.get, "density")
        chunk_ids, page_ids = self.piece_ids(None if stored is None else float(stored))
        planner = Planner([IdRange.of(r) for r in ranges if r.state is RangeState.OPEN],
                          next_id=max((r.id for r in ranges), default=0) + 1,
                          chunk_ids=chunk_ids, readers=max(1, spec.partitions),
                          page_ids=page_ids)
        layout = PartLayout(spec.out_dir, str(self.obj), tuple(self.columns), spec.format,
                            spec.escape_formulas, modified_property(self.obj))
        edges = EdgePipeline(EdgeReader(self.client, self.obj), self.targets, spec.out_dir,
                             spec.format, journal, self.thread)
        done = sum(p.rows for p in parts if p.dataset == str(self.obj))
        writer = PartWriter(layout, journal, self.thread, edges, records_done=done,
                            next_part=max((p.part for p in parts), default=first_part - 1) + 1)
        report = self.reporter(planner, writer, first_part)
        if self.progress is not None:
            self.progress.start(f"export {self.obj}", self.total, done_before=done,
                                unit="records")
        reading = Reading(self.target, planner, writer, SplitLog(journal, self.thread), report)
        if stored is not None or spec.archived or spec.since is not None:
            reading.bounded.set()  # bounded when planned, or never searched by id
        return reading

    def reporter(self, planner: Planner, writer: PartWriter, first_part: int
                 ) -> Callable[[], None]:
        progress, stats = self.progress, self.client.stats
        if progress is None:
            return lambda: None

        def report() -> None:
            progress.update_export(
                read=sum(planner.read_by.values()), written=writer.records_done,
                parts=writer.next_part - first_part, total=self.total, retries=stats.retries,
                http_429=stats.http_429, description=f"export {self.obj}")
        return report

    async def read(self, reading: Reading, list_reader: ListReader,
                   parts: list[ExportPart]) -> None:
        """Every reader, and the edge writers, until every range is read."""
        spec, edges = self.spec, reading.writer.edges
        list_range = reading.planner.take_list_range()
        searchers = 0 if spec.archived else (
            max(1, spec.partitions) if spec.since is not None else spec.partitions)
        records = [p for p in parts if p.dataset == str(self.obj)]
        backlog = edges.backlog(records, [p for p in parts if p.dataset != str(self.obj)])
        async with anyio.create_task_group() as tg:
            edges.open(tg)
            async with anyio.create_task_group() as readers:
                if backlog:
                    readers.start_soon(self.send_backlog, edges, backlog)
                if not reading.bounded.is_set():
                    readers.start_soon(self.bound_unless_read, reading, list_reader,
                                       list_range)
                elif list_range is not None:
                    readers.start_soon(list_reader.run, list_range)
                for _ in range(searchers):
                    readers.start_soon(SearchReader(reading).run)
            await edges.aclose()

    async def bound_unless_read(self, reading: Reading, list_reader: ListReader,
                                list_range: IdRange | None) -> None:
        """The list cursor reads at once; the probes bound its range meanwhile, and are
        called off should the list cursor read everything first (a small export)."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.bound, reading)
            if list_range is not None:
                await list_reader.run(list_range)
            if not reading.planner.ranges:
                tg.cancel_scope.cancel()
        reading.bounded.set()  # search readers find nothing left to cut

    async def send_backlog(self, edges: EdgePipeline, backlog: list[ExportPart]) -> None:
        """The edges of record parts an earlier run wrote without all their edges."""
        for part in backlog:
            assert part.path is not None
            ids = await anyio.to_thread.run_sync(read_ids, self.spec.out_dir / part.path)
            await edges.send(part.part, ids, None)

    def account(self, parts: list[ExportPart], reading: Reading, list_reader: ListReader,
                resumed: bool) -> ExportSummary:
        """What every summary says, stopped or finished."""
        stats = self.client.stats
        return ExportSummary(
            object=str(self.obj), out_dir=str(self.spec.out_dir), format=self.spec.format,
            records=sum(p.rows for p in parts if p.dataset == str(self.obj)),
            parts=len([p for p in parts if p.path]),
            records_read=sum(reading.planner.read_by.values()),
            api_calls=stats.api_calls, search_calls=stats.search_calls,
            list_calls=list_reader.calls,
            association_calls=reading.writer.edges.reader.calls, http_429=stats.http_429,
            retries=stats.retries, elapsed_s=round(time.monotonic() - self.started, 3),
            resumed=resumed, notes=list_reader.notes)

    async def finish(self, summary: ExportSummary, reading: Reading, watermark: str,
                     first_part: int) -> None:
        """Write the manifest and complete the summary of a finished export."""
        spec = self.spec
        parts = await self.call(self.journal.parts)
        since = _utc_text(spec.since_utc) if spec.since_utc else None
        modified = [p.max_modified for p in parts
                    if p.dataset == str(self.obj) and p.max_modified]
        run = ExportRun(watermark, since, first_part, parts, max(modified, default=None))
        await anyio.to_thread.run_sync(write_manifest, self.folder,
                                       manifest_header(spec, self.obj, self.columns),
                                       run, self.edge_datasets)
        summary.edges = {name: run.rows(dataset)
                         for name, dataset in self.edge_datasets.items()}
        summary.ranges = len(await self.call(self.journal.ranges))
        summary.splits = reading.planner.splits
        elapsed = summary.elapsed_s
        summary.records_per_s = (round(summary.records_read / elapsed, 1) if elapsed > 0
                                 else 0.0)
        summary.watermark, summary.since = watermark, since
        summary.unparsed_values = unparsed = reading.writer.unparsed
        if unparsed:
            summary.notes.append(f"{unparsed} values did not parse as their property "
                                 "type and were written as null")
