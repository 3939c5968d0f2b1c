"""`hsbulk import`: one import step, from its plan to its summary.

Exactly-once comes from the journal: a batch is committed IN_FLIGHT before its request
leaves and DONE with its per-row outcome after; a resumed run skips DONE batches and
reconciles IN_FLIGHT creates by reading them back by their unique key before resending
only what is missing (see imports/reconcile.py). The stages are wired in
imports/pipeline.py; this module plans the step, opens its journal and accounts for it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread
import polars as pl

from engine.client import HubSpotClient
from engine.errors import ConfigError
from engine.imports.answers import SourceNames
from engine.imports.archive import ArchiveEncoder, ArchiveSender, count_archived
from engine.imports.chunks import ChunkEncoder
from engine.imports.dedupe import DUPLICATE_SKIPPED, SKIPPED, Dedupe, dedupe_for, folded
from engine.imports.delta import DeltaCounts, DeltaSession, default_state_path
from engine.imports.drift import DriftCheck
from engine.imports.mirror import MaxArchive, Mirror, key_source, mark_input_seen
from engine.imports.pipeline import Encoder, Pipeline, Sender, StepState
from engine.imports.plan import (
    RECORD_ID,
    ImportSpec,
    InlineAssociation,
    StepPlan,
    job_id,
    plan_step,
)
from engine.imports.reconcile import Reconciler, ensure_import_key
from engine.imports.sender import BatchSender
from engine.imports.writer import Journal, StateSink
from engine.interrupt import StopRequest
from engine.journal import (
    BatchRecord,
    BatchState,
    DeltaStore,
    JournalThread,
    ResultsChunk,
    SqliteCheckpoint,
)
from engine.lookups import fetch_lookups
from engine.report import (
    REJECT_FIELDS,
    Progress,
    ProgressView,
    Summary,
    frame_of,
    rejects_frame,
    results_frame,
    write_frame,
)
from engine.rerun import import_request, input_digest, stored_result
from engine.schema import Schema, fetch_schema
from engine.source import SOURCE_ROW, Source, open_source

# A job step's associations in delta mode, written after the import pass while the state
# is open (before the mirror): (the session, the natural key's input column) -> a stop
# reason when stopped (resumable), else None.
AssociateHook = Callable[[DeltaSession, str | None], Awaitable[str | None]]


class StepRunner:
    """Runs one import step against one client and one checkpoint."""

    def __init__(self, client: HubSpotClient, checkpoint: SqliteCheckpoint, spec: ImportSpec,
                 *, progress: Progress | None = None,
                 inline: Sequence[InlineAssociation] = (),
                 stop: StopRequest | None = None,
                 thread: JournalThread | None = None,
                 associate: AssociateHook | None = None) -> None:
        self.client = client
        self.associate = associate  # delta job steps: their associations (see the hook)
        self.stop = stop or StopRequest()
        self.inline = tuple(inline) if spec.mode == "create" else ()
        self.checkpoint = checkpoint
        self.spec = spec
        self.progress = progress or ProgressView(quiet=True)
        self.state = StepState()
        self.journal = Journal(checkpoint, thread or JournalThread())
        self.resumed = False
        self.notes: list[str] = []
        self._stats_at_start = (0, 0, 0)
        self.delta: DeltaSession | None = None  # --delta: the state and this run's id in it
        self.dedupe: Dedupe | None = None  # rows sharing a key: which one is sent

    def state_path(self) -> Path:
        """The delta state: `spec.state`, else beside the journal, by object, key, portal."""
        return state_path_of(self.spec, self.checkpoint.path, self.client.settings.base_url)

    async def run(self) -> Summary:
        spec = self.spec
        started = time.monotonic()
        stats = self.client.stats
        self._stats_at_start = (stats.api_calls, stats.http_429, stats.retries)
        source = open_source(spec.source)
        schema = await fetch_schema(self.client, spec.object_type)
        with self.stop.hard_scope(on_request=True):  # reading only: nothing to finish
            step = await anyio.to_thread.run_sync(plan_step, spec, source, schema,
                                                  abandon_on_cancel=True)
            self.dedupe = await anyio.to_thread.run_sync(dedupe_for, spec, step, schema,
                                                         source, abandon_on_cancel=True)
        if self.stop.requested:
            self._stopped(self.stop.reason or "interrupted")
            return await self._summary(started)
        if spec.mode == "create" and step.keys.key_property == spec.import_key:
            note = await ensure_import_key(self.client, spec, schema)
            self.notes += [note] if note else []
        if step.options.date_order != spec.options.date_order:
            self.notes.append(f"date order {step.options.date_order} detected from the file")
        pipeline = await self._pipeline(source, step)
        try:
            try:
                await pipeline.run(source)
            finally:
                self.progress.stop()
            if self.stop.requested and not pipeline.complete:
                self._stopped(self.stop.reason or "interrupted")
            if self.delta is not None and self.state.stop_reason is None:
                await self._after_import(schema, source, step)
            return await self._summary(started)
        finally:
            if self.delta is not None:
                self.delta.store.close()

    async def _after_import(self, schema: Schema, source: Source, step: StepPlan) -> None:
        """Delta, after a complete import pass: the drift check (`--verify-sample`,
        imports/drift.py), a job step's associations (`associate`) and the mirror
        (`--mirror`, imports/mirror.py; with associations, their absent edges too) run on
        the state, then the state's run is finished. Anything they raise leaves the run unfinished
        (the next run resumes it)."""
        delta, spec = self.delta, self.spec
        assert delta is not None and self.state.delta is not None
        counts = self.state.delta
        if spec.verify_sample:
            drift = await DriftCheck(self.client, spec.object_type, schema, delta.store,
                                     delta.run_id, self.journal.thread
                                     ).run(spec.verify_sample)
            counts.drifted = drift.drifted
        if self.associate is not None:
            reason = await self.associate(delta, key_source(step))
            if reason is not None:  # the state's run stays unfinished: the next resumes it
                self._stopped(reason)
                return
        if spec.mirror:
            column = key_source(step)
            if column is None:
                raise ConfigError("mirror needs the natural key as an input column")
            # Every key of today's input is present, its row valid or not: a row refused
            # for a bad value still names a record that must not be archived.
            await self.journal.call(mark_input_seen, source, column, delta.store,
                                    delta.run_id)
            mirrored = await Mirror(self.client, self.checkpoint, self.journal.thread,
                                    delta.store, step=spec.step, obj=spec.object_type,
                                    run_id=delta.run_id,
                                    guard=MaxArchive.parse(spec.max_archive)
                                    ).run(edges=self.associate is not None)
            counts.archived = mirrored.archived
            if mirrored.unlinked:
                self.notes.append(f"mirror: removed {mirrored.unlinked:,} associations "
                                  "absent from the input")
        await self.journal.call(delta.store.finish_run, delta.run_id)

    async def _pipeline(self, source: Source, step: StepPlan) -> Pipeline:
        """Open the step's journal (resuming it if it exists) and wire its stages."""
        spec = self.spec
        spec_hash = spec.spec_hash(step.mapping)
        digest = await anyio.to_thread.run_sync(input_digest, spec.source)
        self.resumed = await self.journal.call(
            self.checkpoint.open_job, spec.step, spec_hash, {spec.step: digest})
        done = await self.journal.call(self.checkpoint.batches, spec.step)
        if self.resumed:
            self.notes.append(f"resumed from checkpoint {self.checkpoint.path}")
        self.state.total_rows = await anyio.to_thread.run_sync(estimate_rows, source,
                                                               abandon_on_cancel=True)
        self.progress.start(f"{spec.step} ({spec.object_type} {spec.mode})",
                            self.state.total_rows, done_before=sum(
                                len(r.rows) for r in done.values()
                                if r.state is BatchState.DONE))
        reconciler = Reconciler(self.client, spec, step.keys)
        if spec.delta is not None:
            self.delta = await self._open_state(step)
        lookups = await fetch_lookups(self.client, spec.object_type, step.plan)
        encoder = ChunkEncoder(step.plan, step.keys, step.id_source, spec.import_key,
                               job_id(spec_hash, digest), self.inline, self.delta, lookups)
        stages: tuple[Encoder, Sender] = self._archive_stages(step, done) if (
            spec.mode == "archive") else (
            encoder, BatchSender(self.client, spec, step.keys, reconciler))
        return Pipeline(
            step=spec.step, journal=self.journal, encoder=stages[0], sender=stages[1],
            reconciler=reconciler if spec.mode == "create" else None, state=self.state,
            done=done, stop=self.stop, batch_size=spec.batch_size,
            concurrency=spec.concurrency, queue_batches=spec.queue_batches, show=self._show,
            dedupe=self.dedupe, names=source_names(step))

    def _archive_stages(self, step: StepPlan, done: Mapping[int, BatchRecord]
                        ) -> tuple[ArchiveEncoder, ArchiveSender]:
        """`--mode archive`: keys read from their column, archived by id (archive.py)."""
        assert step.id_source is not None
        in_flight = [seq for seq, r in done.items() if r.state is BatchState.IN_FLIGHT]
        return (ArchiveEncoder(step.id_source, step.keys),
                ArchiveSender(self.client, self.spec, step.keys, step.id_source, self.journal,
                              in_flight))

    async def _open_state(self, step: StepPlan) -> DeltaSession:
        """Open the delta state and its run: the unfinished one when this run resumes."""
        spec = self.spec
        assert spec.delta is not None and step.keys.key_column is not None
        key = spec.id_property or RECORD_ID
        identity = f"{spec.object_name} by {key} at {self.client.settings.base_url}"
        path = self.state_path()
        store = await self.journal.call(DeltaStore, path, identity)
        record = await self.journal.call(self.checkpoint.run_record)
        tag = f"{self.checkpoint.path.resolve()}:{spec.step}:" + (
            f"{record.created_at!r}" if record is not None else "")
        run_id = await self.journal.call(partial(store.begin_run, tag, resume=self.resumed))
        empty = await self.journal.call(store.size) == 0
        if empty and spec.delta != "refresh":
            self.notes.append(f"delta state {path} is empty: a full first load")
        self.state.delta = DeltaCounts()
        self.journal.state = StateSink(store, run_id, merge=spec.delta != "refresh")
        return DeltaSession(store, run_id, spec.delta, tuple(step.plan.properties),
                            step.keys.key_column, empty=empty)

    def _stopped(self, reason: str) -> None:
        if self.state.stop_reason is None:
            self.state.stop_reason = reason
            self.state.stop_code = 4

    def _show(self) -> None:
        stats = self.client.stats
        state = self.state
        unchanged = state.delta.unchanged if state.delta is not None else 0
        self.progress.update(done=state.done_rows + state.local_rejected_rows + unchanged,
                             done_before=state.skipped_rows, total=state.total_rows,
                             sent=state.sent_rows, rejected=state.rejected_rows,
                             retries=stats.retries, http_429=stats.http_429,
                             description=self.spec.step)

    async def _summary(self, started: float) -> Summary:
        counts = await self.journal.call(self.checkpoint.counts, self.spec.step)
        elapsed = time.monotonic() - started
        stats = self.client.stats
        state = "done" if self.state.stop_reason is None else "stopped"
        delta = self.state.delta or DeltaCounts()
        if self.spec.mode == "archive":
            delta.archived = await self.journal.call(
                lambda: count_archived(self.checkpoint.iter_results(self.spec.step)))
        summary = Summary(
            step=self.spec.step, object=str(self.spec.object_type), mode=self.spec.mode,
            rows_read=self.state.rows_read, created=counts.created, updated=counts.updated,
            unchanged=counts.unchanged + delta.unchanged, rejected=counts.rejected,
            changed=delta.changed, new=delta.new, archived=delta.archived,
            drifted=delta.drifted, skipped=self.state.duplicate_rows,
            api_calls=stats.api_calls - self._stats_at_start[0],
            http_429=stats.http_429 - self._stats_at_start[1],
            retries=stats.retries - self._stats_at_start[2], elapsed_s=round(elapsed, 3),
            records_per_s=round(self.state.sent_rows / elapsed, 1) if elapsed else 0.0,
            state=state, stop_reason=self.state.stop_reason,
            checkpoint=str(self.checkpoint.path), resumed=self.resumed, notes=self.notes,
        )
        if state == "done":
            await self.journal.call(self.checkpoint.finish_job, self.spec.step)
        return summary


def state_path_of(spec: ImportSpec, checkpoint: Path, base_url: str) -> Path:
    """A delta step's state: `spec.state`, else beside its journal, by object, key, portal."""
    return spec.state or default_state_path(checkpoint.parent, spec.object_name,
                                            spec.id_property or RECORD_ID, base_url)


def estimate_rows(source: Source) -> int | None:
    """Data rows in the input, for the progress bar's total (None when not cheap).

    CSV: line ends counted in 4 MB blocks (a quoted field holding a line end makes it an
    overestimate). Not `scan_csv(...).select(pl.len())`: polars memory-maps the whole
    file for it, and the mapped pages count in the process's memory (measured: 384 MB
    for a 3M-row file, the whole of the growth of an import's peak with its input)."""
    total = 0
    try:
        for path in source.files:
            if source.format == "parquet":
                total += int(pl.scan_parquet(path).select(pl.len()).collect().item())
            elif source.format == "csv":
                total += max(0, _records(path) - 1)  # the header
            else:
                return None
    except (pl.exceptions.PolarsError, OSError):
        return None
    return total


def _records(path: Path) -> int:
    """Line ends in a file (CR for a file without LF), plus an unterminated last line."""
    lf = cr = 0
    last = b""
    with path.open("rb") as handle:
        while block := handle.read(4 << 20):
            lf += block.count(b"\n")
            cr += block.count(b"\r") if not lf else 0
            last = block[-1:]
    ends = lf or cr
    return ends + (1 if last not in (b"\n", b"\r", b"") else 0)


async def run_import(client: HubSpotClient, checkpoint_path: Path, spec: ImportSpec, *,
                     progress: Progress | None = None,
                     stop: StopRequest | None = None,
                     restart: bool = False) -> tuple[Summary, int]:
    """Run one step; returns the summary and the exit code it calls for.

    The same input and spec as a finished run of this journal: nothing is sent, and its
    stored summary and code come back. `restart`: a new run even so (see `begin_run`).
    A delta run (`spec.delta`) is never "already complete": every night diffs its input
    against the state (an unchanged input sends nothing), so a finished run of the same
    input is archived and a new one starts."""
    request = await anyio.to_thread.run_sync(import_request, spec)
    checkpoint = SqliteCheckpoint(checkpoint_path)
    thread = JournalThread()
    try:
        finished = await thread.call(partial(checkpoint.begin_run, restart=restart),
                                      request)
        if finished is not None and spec.delta is not None:
            finished = await thread.call(partial(checkpoint.begin_run, restart=True),
                                         request)
        if finished is not None:
            (summary,), code = stored_result(finished)
            return summary, code
        runner = StepRunner(client, checkpoint, spec, progress=progress, stop=stop,
                            thread=thread)
        summary = await runner.run()
        code = runner.state.stop_code or (1 if summary.rejected else 0)
        if not runner.state.stop_code:
            await thread.call(checkpoint.finish_run, [summary.as_dict()], code)
    finally:
        checkpoint.close()
    return summary, code


def write_outputs(checkpoint_path: Path, spec: ImportSpec, *, results: Path | None,
                  rejects: Path | None) -> None:
    """The results file (source_row, the key, id, action) and the rejects file (hsbulk_*
    reasons, then the original fields), by `engine.outputs` (see engine/report.py)."""
    if results is None and rejects is None:
        return
    checkpoint = SqliteCheckpoint(checkpoint_path)
    try:
        table = frame_of(checkpoint.iter_rejects(spec.step), REJECT_FIELDS)
        skipped = table.filter(pl.col("code") == DUPLICATE_SKIPPED)
        if results is not None:
            key = spec.id_property or (spec.import_key if spec.mode == "create" else RECORD_ID)
            chunks = _read_ahead(checkpoint.iter_keyed_results(spec.step))
            try:
                written = results_frame(chunks, key)
            finally:
                chunks.close()  # before the journal closes: no read left pending
            write_frame(results, _with_skipped(written, skipped))
        if rejects is not None:
            table = table.filter(pl.col("code") != DUPLICATE_SKIPPED)
            write_frame(rejects, _with_original_fields(table, spec))
    finally:
        checkpoint.close()


def _read_ahead(chunks: Iterator[ResultsChunk]) -> Generator[ResultsChunk, None, None]:
    """`chunks`, the next one read from the journal in a worker thread while polars splits
    this one (the journal's reading holds the GIL, polars does not): measured 10-15% off
    the results file of 500k rows."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="hsbulk-results")
    try:
        following = pool.submit(next, chunks, None)
        while (chunk := following.result()) is not None:
            following = pool.submit(next, chunks, None)
            yield chunk
    finally:
        pool.shutdown()


def _with_skipped(results: pl.DataFrame, skipped: pl.DataFrame) -> pl.DataFrame:
    """The results with each skipped duplicate (`--duplicates first|last`): action
    `skipped`, and the id its key was written to by the row that was sent."""
    if not skipped.height:
        return results
    key = results.columns[1]
    ids = (results.filter(pl.col("id").is_not_null())
           .select(folded(pl.col(key)).alias("__folded"), "id")
           .unique("__folded", keep="last", maintain_order=True))
    rows = (skipped.select(pl.col(SOURCE_ROW), pl.col("value").alias(key),
                           folded(pl.col("value")).alias("__folded"))
            .join(ids, on="__folded", how="left", maintain_order="left")
            .select(SOURCE_ROW, key, "id", pl.lit(SKIPPED).alias("action")))
    return pl.concat([results, rows.cast(results.schema)]).sort(SOURCE_ROW,
                                                                maintain_order=True)


def source_names(step: StepPlan) -> SourceNames:
    """How the step's server rejects name columns: each mapped property's source column,
    and the record id's column (update by record id, archive)."""
    columns = {t.property: t.column for t in step.mapping.targets if t.column is not None}
    if step.id_source is not None:
        columns[step.keys.prop or RECORD_ID] = step.id_source
    return SourceNames(columns, step.keys.prop or RECORD_ID)


def _with_original_fields(rejects: pl.DataFrame, spec: ImportSpec) -> pl.DataFrame:
    """Join each reject with its row as read (one more streaming pass, rejects only)."""
    if rejects.height == 0:
        return rejects_frame(rejects, pl.DataFrame(
            schema={SOURCE_ROW: pl.Int64, **dict.fromkeys(open_source(spec.source).columns,
                                                           pl.String)}))
    wanted = rejects.get_column(SOURCE_ROW).unique().implode()
    source = open_source(spec.source)
    originals = [frame.filter(pl.col(SOURCE_ROW).cast(pl.Int64).is_in(wanted))
                 for frame in source.batches(check=False)]
    rows = pl.concat([f.with_columns(pl.col(SOURCE_ROW).cast(pl.Int64)) for f in originals],
                     how="vertical_relaxed") if originals else None
    return rejects_frame(rejects, rows)
