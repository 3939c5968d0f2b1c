"""`hsbulk import`: the scheduler of one import step.

    source -> normalise -> encode -> batcher     (worker thread, one chunk at a time)
      -> journal IN_FLIGHT -> senders x N -> outcome -> journal DONE

Stages talk through a bounded memory object stream, so memory is bounded by the buffer,
not by the file. Exactly-once comes from the journal (checkpoint.py): a batch is
committed IN_FLIGHT before its request leaves and DONE with its per-row outcome after;
a resumed run skips DONE batches and reconciles IN_FLIGHT creates by reading them back by
their unique key before resending only what is missing. Creates therefore always carry a
unique key: `--id-property` when given, else the import-key property holding
`<job id>-<source row>`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
import orjson
import polars as pl
from anyio.abc import TaskStatus

from engine.batch import KEY, ROW, Batch, Batcher, clean_columns, encode_body, input_expr
from engine.client import HubSpotClient, Response
from engine.dryrun import prepare
from engine.errors import (
    ApiError,
    ConfigError,
    EngineError,
    FatalApiError,
    QuotaExhausted,
    RetryableApiError,
    TransportError,
)
from engine.interrupt import StopRequest
from engine.journal import (
    DONE,
    IN_FLIGHT,
    BatchRecord,
    Reject,
    Result,
    SqliteCheckpoint,
    Transition,
)
from engine.mapping import MappingSpec, ResolvedMapping
from engine.normalize import NormalizeOptions, NormalizePlan, normalize
from engine.report import (
    REJECT_FIELDS,
    ProgressView,
    Summary,
    frame_of,
    rejects_frame,
    results_frame,
    write_frame,
)
from engine.rerun import import_request, input_digest, stored_result
from engine.schema import ObjectType, Schema, fetch_schema
from engine.source import Source, SourceSpec, open_source

log = logging.getLogger("hsbulk.import")

Mode = Literal["create", "update", "upsert"]
OnConflict = Literal["reject", "update"]

IMPORT_KEY = "hsbulk_import_key"
NATURAL_KEYS = {"contacts": "email", "companies": "domain"}
RECORD_ID = "hs_object_id"
ASSOCIATIONS = "__associations"
ID_HEADERS = ("hs_object_id", "record id", "id")
GROUPS = {"contacts": "contactinformation", "companies": "companyinformation",
          "deals": "dealinformation", "tickets": "ticketinformation"}
CLOCK_SKEW_S = 5.0  # how far HubSpot's createdAt may trail our clock and still be ours


@dataclass(frozen=True, slots=True)
class ImportSpec:
    """One import step: what to read, how to map it, and how to write it."""

    object_type: ObjectType
    source: SourceSpec
    mode: Mode = "upsert"
    id_property: str | None = None
    mapping: MappingSpec = field(default_factory=MappingSpec)
    options: NormalizeOptions = field(default_factory=NormalizeOptions)
    on_conflict: OnConflict = "reject"
    step: str = "import"
    import_key: str = IMPORT_KEY
    batch_size: int = 100
    concurrency: int = 8
    queue_batches: int = 64
    record_ids: bool = False  # keep natural key -> id in the journal (for associations)

    def spec_hash(self, mapping: ResolvedMapping) -> str:
        """What must not change between a run and its resume."""
        described = {
            "object": self.object_type.type_id, "mode": self.mode, "id": self.id_property,
            "targets": [(t.property, t.column, t.constant, repr(t.options))
                        for t in mapping.targets],
            "options": repr(self.options), "batch": self.batch_size, "step": self.step,
            "conflict": self.on_conflict, "import_key": self.import_key,
        }
        return hashlib.sha256(orjson.dumps(described)).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class InlineAssociation:
    """An association written inside the create call: the target ids are known upfront."""

    column: str
    category: str
    type_id: int
    ids: Mapping[str, str]  # lower-cased target key -> target record id


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """How rows are identified to HubSpot and to the journal."""

    id_property: str | None  # `idProperty` sent with update/upsert ids (None: record id)
    id_column: str | None  # frame column whose value is each input's `id`
    key_property: str | None  # create: unique property read back on reconcile
    key_column: str | None  # frame column with each row's key (batches, journal, idmap)


@dataclass(slots=True)
class StepState:
    rows_read: int = 0
    sent_rows: int = 0
    done_rows: int = 0  # rows of answered batches (server rejects included)
    rejected_rows: int = 0
    local_rejected_rows: int = 0  # rejected before any call (never in a batch)
    total_rows: int | None = None
    stop_reason: str | None = None
    stop_code: int = 0


@dataclass(frozen=True, slots=True)
class StepPlan:
    """Everything about a step that can be settled (or refused) before any call."""

    mapping: ResolvedMapping
    options: NormalizeOptions  # with the date order detected from the file
    plan: NormalizePlan
    keys: KeyPlan
    id_source: str | None  # update by record id: the column holding it


def plan_step(spec: ImportSpec, source: Source, schema: Schema) -> StepPlan:
    """Resolve the mapping, settle options and keys: every configuration error of a step.

    Reads the input (date order detection, strict checks); shared by the import and the
    dry run, so a dry run refuses what the real run would.
    """
    id_source: str | None = None
    mapping_spec = spec.mapping
    if spec.mode == "update" and spec.id_property in (None, RECORD_ID):
        id_source = id_column(spec, source)
        if id_source is None:
            raise ConfigError("--mode update needs the record id: map a column to "
                              "hs_object_id (--map 'Record ID=hs_object_id') or pass "
                              "--id-property")
        mapping_spec = _without(mapping_spec, id_source)
    mapping, options, plan = prepare(source, schema, mapping_spec, spec.options)
    return StepPlan(mapping, options, plan, plan_keys(spec, schema, mapping), id_source)


def plan_keys(spec: ImportSpec, schema: Schema, mapping: ResolvedMapping) -> KeyPlan:
    """How rows are identified; a ConfigError for what the mode cannot work with."""
    mapped = {t.property for t in mapping.targets}
    obj_name = spec.object_type.name or spec.object_type.type_id
    natural = NATURAL_KEYS.get(obj_name)
    if spec.id_property is not None:
        prop = schema.get(spec.id_property)
        if prop is None:
            raise ConfigError(f"--id-property {spec.id_property!r} is not a property of "
                              f"{spec.object_type}")
        if not (prop.unique or prop.name == natural or prop.name == RECORD_ID):
            raise ConfigError(
                f"--id-property {prop.name!r} does not have unique values in "
                f"{spec.object_type}; use {natural or 'a unique-value property'}")
        if prop.name != RECORD_ID and prop.name not in mapped:
            raise ConfigError(f"--id-property {prop.name!r} is not mapped from any column")
    if spec.mode == "upsert":
        if spec.id_property is None or spec.id_property == RECORD_ID:
            raise ConfigError("--mode upsert needs --id-property naming a unique-value "
                              f"property (e.g. {natural or 'a custom unique property'})")
        return KeyPlan(spec.id_property, spec.id_property, None, spec.id_property)
    if spec.mode == "update":
        if spec.id_property is None or spec.id_property == RECORD_ID:
            return KeyPlan(None, RECORD_ID, None, RECORD_ID)
        return KeyPlan(spec.id_property, spec.id_property, None, spec.id_property)
    if spec.id_property is not None:
        return KeyPlan(None, None, spec.id_property, spec.id_property)
    return KeyPlan(None, None, spec.import_key, spec.import_key)


def id_column(spec: ImportSpec, source: Source) -> str | None:
    """Update by record id: the source column that holds it."""
    for src, prop in spec.mapping.pairs:
        if prop == RECORD_ID:
            return src
    for header in source.columns:
        if header.strip().lower() in ID_HEADERS:
            return header
    return None


def _path(obj: ObjectType, tail: str) -> str:
    return f"/crm/v3/objects/{obj.path_name}/{tail}"


class Journal:
    """The async face of the checkpoint: one writer thread, grouped commits.

    `commit` waits until its transitions are durable; `defer` hands over transitions
    that may wait (a batch's DONE: lost in a crash, the batch is merely reconciled as in
    flight on resume), which ride with the next commit or are written within
    `flush_s` on their own.
    """

    def __init__(self, checkpoint: SqliteCheckpoint, *, flush_s: float = 0.25,
                 defer_max: int = 64) -> None:
        self.checkpoint = checkpoint
        self.flush_s = flush_s
        self.defer_max = defer_max
        self._pending: list[tuple[Transition, anyio.Event]] = []
        self._deferred: list[Transition] = []
        self._wake = anyio.Event()
        self._thread = anyio.CapacityLimiter(1)
        self._closed = False
        self._failure: BaseException | None = None

    async def commit(self, *transitions: Transition) -> None:
        """Wait until `transitions` are durable (grouped with whatever else is pending)."""
        if self._failure is not None:
            raise self._failure
        done = anyio.Event()
        self._pending += [(t, done) for t in transitions]
        self._wake.set()
        await done.wait()
        if self._failure is not None:
            raise self._failure

    def defer(self, transition: Transition) -> None:
        """Journal `transition` with the next commit, or within `flush_s`."""
        if self._failure is not None:
            raise self._failure
        self._deferred.append(transition)
        if len(self._deferred) >= self.defer_max:
            self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with anyio.move_on_after(self.flush_s):
                await self._wake.wait()
            self._wake = anyio.Event()
            group, self._pending = self._pending, []
            deferred, self._deferred = self._deferred, []
            if group or deferred:
                try:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(
                            self.checkpoint.apply, deferred + [t for t, _ in group],
                            limiter=self._thread)
                except Exception as exc:  # the journal is broken: nothing may be sent now
                    self._failure = exc
                for _, done in group:
                    done.set()  # setting an Event twice is harmless
            if self._closed and not self._pending and not self._deferred:
                return

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    async def flush(self) -> None:
        """After a hard stop: write what is deferred (answered batches' DONE)."""
        deferred, self._deferred = self._deferred, []
        if deferred and self._failure is None:
            await anyio.to_thread.run_sync(self.checkpoint.apply, deferred,
                                           limiter=self._thread)

    async def call(self, func: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._thread)


class KeyGate:
    """Rows sharing a key reach HubSpot in file order.

    Holds the case-folded keys of every batch sent and not yet answered; a later batch
    holding one of them waits until that batch is answered. (A key repeated inside one
    batch already closes the batch: see batch.Batcher.) So at most one batch holds a key
    at a time, and memory is bounded by the batches in flight.
    """

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._freed: anyio.Event | None = None  # made only when a batch has to wait

    def __repr__(self) -> str:
        return f"KeyGate(held={len(self._held)})"

    def is_clear(self, keys: Sequence[str] | None) -> bool:
        return keys is None or self._held.isdisjoint(keys)

    def hold(self, keys: Sequence[str] | None) -> None:
        if keys is not None:
            self._held.update(keys)

    def release(self, keys: Sequence[str] | None) -> None:
        if keys is None:
            return
        self._held.difference_update(keys)
        if self._freed is not None:
            self._freed.set()
            self._freed = None

    async def wait_clear(self, keys: Sequence[str] | None) -> None:
        while not self.is_clear(keys):
            if self._freed is None:
                self._freed = anyio.Event()
            await self._freed.wait()


@dataclass(slots=True)
class Sent:
    """What became of a set of inputs."""

    results: list[tuple[int, str, str]] = field(default_factory=list)  # Result-shaped
    rejects: list[Reject] = field(default_factory=list)
    ids: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def merge(self, other: Sent) -> None:
        self.results += other.results
        self.rejects += other.rejects
        self.ids.update(other.ids)


class StepRunner:
    """Runs one import step against one client and one checkpoint."""

    def __init__(self, client: HubSpotClient, checkpoint: SqliteCheckpoint, spec: ImportSpec,
                 *, progress: ProgressView | None = None,
                 inline: Sequence[InlineAssociation] = (),
                 stop: StopRequest | None = None) -> None:
        self.client = client
        self.stop = stop or StopRequest()
        self.gate = KeyGate()
        self.inline = tuple(inline) if spec.mode == "create" else ()
        self.checkpoint = checkpoint
        self.spec = spec
        self.progress = progress or ProgressView(quiet=True)
        self.state = StepState()
        self.journal = Journal(checkpoint)
        self.schema: Schema | None = None
        self.keys: KeyPlan | None = None
        self.job_id = ""
        self.batches_done: dict[int, BatchRecord] = {}
        self.resumed = False
        self.notes: list[str] = []
        self._halted = False  # stopped from inside (daily quota, HubSpot unavailable)
        self._unsent = 0  # batches journaled but dropped by a stop
        self._produced_all = False
        self._stats_at_start = (0, 0, 0)
        self._skipped_rows = 0  # rows of batches an earlier run finished (not this run's pace)

    # -- planning ---------------------------------------------------------------------

    async def _ensure_import_key(self, schema: Schema) -> None:
        name = self.spec.import_key
        existing = schema.get(name)
        if existing is not None:
            if not existing.unique:
                raise ConfigError(f"property {name!r} exists on {self.spec.object_type} but "
                                  "without unique values; pass --id-property or another "
                                  "--import-key")
            return
        obj = self.spec.object_type
        group = GROUPS.get(obj.name or "", f"{obj.name or 'object'}information")
        body = {"name": name, "label": "hsbulk import key", "type": "string",
                "fieldType": "text", "groupName": group, "hasUniqueValue": True,
                "description": "Set by hsbulk so that a retried create can never duplicate."}
        try:
            await self.client.post_json(f"/crm/v3/properties/{obj.path_name}", body)
        except ApiError as exc:
            if exc.status != 409:
                raise
        message = (f"created unique property {name!r} on {obj} so that retried creates "
                   "cannot duplicate records")
        log.info("%s", message)
        self.notes.append(message)

    # -- the run ------------------------------------------------------------------------

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
        if self.stop.requested:
            self._stop(self.stop.reason or "interrupted", 4)
            return await self._summary(started)
        mapping, options, plan = step.mapping, step.options, step.plan
        keys, id_source = step.keys, step.id_source
        if spec.mode == "create" and keys.key_property == spec.import_key:
            await self._ensure_import_key(schema)
        if options.date_order != spec.options.date_order:
            self.notes.append(f"date order {options.date_order} detected from the file")
        self.schema, self.keys = schema, keys
        spec_hash = spec.spec_hash(mapping)
        digest = await anyio.to_thread.run_sync(input_digest, spec.source)
        self.job_id = hashlib.sha256(f"{spec_hash}:{digest}".encode()).hexdigest()[:12]
        self.resumed = await self.journal.call(
            self.checkpoint.open_job, spec.step, spec_hash, {spec.step: digest})
        self.batches_done = await self.journal.call(self.checkpoint.batches, spec.step)
        if self.resumed:
            self.notes.append(f"resumed from checkpoint {self.checkpoint.path}")
        self.state.total_rows = await anyio.to_thread.run_sync(estimate_rows, source,
                                                               abandon_on_cancel=True)
        self.progress.start(f"{spec.step} ({spec.object_type} {spec.mode})",
                            self.state.total_rows, done_before=sum(
                                len(r.rows) for r in self.batches_done.values()
                                if r.state == DONE))
        try:
            await self._pipeline(source, plan, keys, id_source)
        finally:
            self.progress.stop()
        if self.stop.requested and not self._complete:
            self._stop(self.stop.reason or "interrupted", 4)
        return await self._summary(started)

    @property
    def _stopping(self) -> bool:
        return self._halted or self.stop.requested

    @property
    def _complete(self) -> bool:
        """Every batch of the input was answered (a stop may have come too late to matter)."""
        return self._produced_all and not self._unsent and not self.stop.forced

    async def _pipeline(self, source: Source, plan: NormalizePlan, keys: KeyPlan,
                        id_source: str | None) -> None:
        send, receive = anyio.create_memory_object_stream[Batch](self.spec.queue_batches)
        try:
            with self.stop.hard_scope():
                async with anyio.create_task_group() as outer:
                    await outer.start(self.journal.run)
                    try:
                        async with anyio.create_task_group() as tg:
                            async with receive:
                                for _ in range(self.spec.concurrency):
                                    tg.start_soon(self._sender, receive.clone())
                            await self._produce(send, source, plan, keys, id_source)
                    finally:
                        self.journal.close()
        except BaseExceptionGroup as group:
            leaf = _first_engine_error(group)
            if leaf is not None:
                raise leaf from None
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await self.journal.flush()

    def _stop(self, reason: str, code: int) -> None:
        if self.state.stop_reason is None:
            self._halted = True
            self.state.stop_reason = reason
            self.state.stop_code = code

    async def _produce(self, send: anyio.abc.ObjectSendStream[Batch], source: Source,
                       plan: NormalizePlan, keys: KeyPlan, id_source: str | None) -> None:
        """Feed batches to the senders, journaled IN_FLIGHT a block at a time.

        A worker thread prepares the next chunk (read, normalise, encode, cut into batches)
        while this one is fed, so the senders never wait for a chunk boundary. A block of
        batches is committed IN_FLIGHT in one transaction before any of them is handed to a
        sender: one fsync for many requests. A batch journaled but never sent (the run
        stopped first) is reconciled on resume like any other in flight.
        """
        batcher = Batcher(self.spec.batch_size)
        chunks = self._prepared_chunks(source, plan, keys, id_source)
        block: list[Batch] = []
        block_size = max(1, self.spec.concurrency)

        def next_chunk() -> tuple[list[Batch], list[Reject], int] | None:
            chunk = next(chunks, None)
            if chunk is None:
                return None
            encoded, rejects, rows_read = chunk
            return list(batcher.feed(encoded)), rejects, rows_read

        async def release() -> None:
            if not block:
                return
            await self.journal.commit(*(Transition(self.spec.step, b.seq, IN_FLIGHT,
                                                   rows=b.rows, keys=b.keys) for b in block))
            for batch in block:
                await send.send(batch)
            block.clear()

        async def admit(batch: Batch) -> None:
            """Queue `batch` once no batch queued or in flight holds one of its keys."""
            if not self.gate.is_clear(batch.folded):
                await release()  # the holder may still be in this block
                await self.gate.wait_clear(batch.folded)
            self.gate.hold(batch.folded)
            block.append(batch)

        async def read_ahead(out: anyio.abc.ObjectSendStream[
                tuple[list[Batch], list[Reject], int]]) -> None:
            async with out:
                while not self._stopping:
                    chunk = await anyio.to_thread.run_sync(next_chunk)
                    if chunk is None:
                        return
                    try:
                        await out.send(chunk)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        return  # the consumer stopped: the chunk is not needed

        ahead, prepared = anyio.create_memory_object_stream[
            tuple[list[Batch], list[Reject], int]](0)
        async with send, anyio.create_task_group() as tg:
            tg.start_soon(read_ahead, ahead)
            async with prepared:
                async for batches, rejects, rows_read in prepared:
                    self.state.rows_read += rows_read
                    if rejects:
                        await self.journal.commit(Transition(self.spec.step, -1, "LOCAL",
                                                             rejects=rejects))
                        local = len({r.source_row for r in rejects})
                        self.state.rejected_rows += local
                        self.state.local_rejected_rows += local
                    for batch in batches:
                        if self._stopping:
                            break
                        if self._skip_done(batch):
                            continue
                        await admit(batch)
                        if len(block) >= block_size:
                            await release()
                    if self._stopping:
                        break
                    await release()
                if not self._stopping:
                    for batch in batcher.flush():
                        if not self._skip_done(batch):
                            await admit(batch)
                    await release()
                    self._produced_all = not self._stopping
                tg.cancel_scope.cancel()  # stopping: no chunk is needed any more

    def _skip_done(self, batch: Batch) -> bool:
        """True for a batch an earlier run finished (it must cover the same rows)."""
        record = self.batches_done.get(batch.seq)
        if record is None or record.state != DONE:
            return False
        if record.rows != tuple(batch.rows):
            raise ConfigError(f"batch {batch.seq} of step {self.spec.step} covers other "
                              "rows than when it was journaled; the input or the "
                              "normalisation changed: use a new --checkpoint")
        self.state.done_rows += len(batch.rows)
        self._skipped_rows += len(batch.rows)
        self._show()
        return True

    def _prepared_chunks(self, source: Source, plan: NormalizePlan, keys: KeyPlan,
                         id_source: str | None) -> Iterator[tuple[pl.DataFrame, list[Reject],
                                                                   int]]:
        """Runs in a worker thread: read, normalise, encode (polars releases the GIL)."""
        properties = list(plan.properties)
        if keys.key_property == self.spec.import_key:
            properties.append(self.spec.import_key)
        for frame in source.batches():
            valid, rejected = normalize(frame, plan)
            extra: list[Reject] = []
            if id_source is not None:
                ids = frame.select(pl.col(ROW).cast(pl.Int64),
                                   pl.col(id_source).str.strip_chars().alias(RECORD_ID))
                valid = valid.join(ids, on=ROW, how="left", maintain_order="left")
            if keys.key_property == self.spec.import_key:
                valid = valid.with_columns(
                    pl.concat_str(pl.lit(f"{self.job_id}-"), pl.col(ROW).cast(pl.String))
                    .alias(self.spec.import_key))
            if keys.key_column is not None:
                key = pl.col(keys.key_column)
                bad_key = key.is_null() | (key == "")
                if keys.key_column == RECORD_ID:
                    bad_key = bad_key | ~key.str.contains(r"^\d+$")
                missing = valid.filter(bad_key)
                if missing.height:
                    extra = [
                        Reject(row, keys.key_column, "MISSING_ID" if value in (None, "")
                               else "INVALID_ID",
                               f"{keys.key_column} is needed to identify the record"
                               + ("" if value in (None, "") else
                                  f"; {value!r} is not a HubSpot record id"), value)
                        for row, value in missing.select(ROW, keys.key_column).iter_rows()
                    ]
                    valid = valid.filter(~bad_key)
            if rejected.height:
                sent = rejected.get_column(ROW).is_in(valid.get_column(ROW).implode())
                rejected = rejected.with_columns(sent.alias("__sent"))
            local = extra + [Reject(int(r[0]), r[1] or "", r[3], r[4], r[2], not r[5])
                             for r in rejected.iter_rows()]
            valid = self._with_inline_associations(valid, frame)
            inputs = input_expr(properties, id_column=keys.id_column,
                                id_property=keys.id_property,
                                associations_column=ASSOCIATIONS if self.inline else None,
                                clean=clean_columns(valid, properties))
            encoded = valid.select(
                pl.col(ROW), inputs,
                *([pl.col(keys.key_column).alias(KEY)] if keys.key_column else []))
            yield encoded, local, frame.height

    def _with_inline_associations(self, valid: pl.DataFrame,
                                  frame: pl.DataFrame) -> pl.DataFrame:
        """Add each row's `associations` JSON array (null when no target is known)."""
        if not self.inline:
            return valid
        keys = frame.select(pl.col(ROW).cast(pl.Int64), *(
            pl.col(a.column).str.strip_chars().str.to_lowercase().alias(f"__a{i}")
            for i, a in enumerate(self.inline)))
        valid = valid.join(keys, on=ROW, how="left", maintain_order="left")
        parts = [
            pl.lit('{"to":{"id":"')
            + pl.col(f"__a{i}").replace_strict(dict(a.ids), default=None, return_dtype=pl.String)
            + pl.lit(f'"}},"types":[{{"associationCategory":"{a.category}",'
                     f'"associationTypeId":{a.type_id}}}]}}')
            for i, a in enumerate(self.inline)
        ]
        joined = pl.concat_str(parts, separator=",", ignore_nulls=True)
        return valid.with_columns(
            pl.when(joined.is_not_null() & (joined != ""))
            .then(pl.lit("[") + joined + pl.lit("]")).alias(ASSOCIATIONS))

    # -- senders ----------------------------------------------------------------------

    async def _sender(self, receive: anyio.abc.ObjectReceiveStream[Batch]) -> None:
        async with receive:
            async for batch in receive:
                try:
                    if self._stopping:
                        self._unsent += 1  # drained unsent: the next run picks it up
                        continue
                    await self._process(batch)
                except QuotaExhausted as exc:
                    self._stop(str(exc), 4)
                except (RetryableApiError, TransportError) as exc:
                    self._stop(f"HubSpot unavailable after retries: {exc}", 4)
                finally:
                    self.gate.release(batch.folded)

    async def _process(self, batch: Batch) -> None:
        """Send a batch the producer journaled IN_FLIGHT; journal its outcome as DONE."""
        step = self.spec.step
        positions = list(range(len(batch.rows)))
        outcome = Sent()
        record = self.batches_done.get(batch.seq)
        if record is not None and record.state == IN_FLIGHT and self.spec.mode == "create":
            outcome, positions = await self._reconcile(batch, positions, record.started_at)
        started = time.time() if record is None or record.started_at is None else min(
            time.time(), record.started_at)
        if positions:
            self.state.sent_rows += len(positions)
            outcome.merge(await self._send(batch, positions, started))
        self.journal.defer(Transition(step, batch.seq, DONE, results=outcome.results,
                                      rejects=outcome.rejects, ids=outcome.ids))
        self.state.done_rows += len(batch.rows)
        if outcome.rejects:
            self.state.rejected_rows += len({r.source_row for r in outcome.rejects}
                                            - {r[0] for r in outcome.results})
        self._show()

    def _show(self) -> None:
        stats = self.client.stats
        self.progress.update(done=self.state.done_rows + self.state.local_rejected_rows,
                             done_before=self._skipped_rows, total=self.state.total_rows,
                             sent=self.state.sent_rows, rejected=self.state.rejected_rows,
                             retries=stats.retries, http_429=stats.http_429,
                             description=self.spec.step)

    async def _send(self, batch: Batch, positions: list[int], started: float,
                    ambiguous: bool = False) -> Sent:
        """Send these inputs of `batch`; bisect a batch that fails whole.

        `ambiguous`: an earlier attempt at these inputs may have landed unseen, so a
        create that now conflicts may be our own record (else it is someone else's).
        """
        spec = self.spec
        path = _path(spec.object_type, {"create": "batch/create", "update": "batch/update",
                                        "upsert": "batch/upsert"}[spec.mode])
        try:
            response = await self.client.request("POST", path,
                                                 body=encode_body(batch.subset(positions)))
        except FatalApiError:
            raise
        except (QuotaExhausted, RetryableApiError):
            raise
        except ApiError as exc:
            ambiguous = ambiguous or exc.ambiguous
            if len(positions) > 1:
                half = len(positions) // 2
                out = await self._send(batch, positions[:half], started, ambiguous)
                out.merge(await self._send(batch, positions[half:], started, ambiguous))
                return out
            if exc.status == 409 and spec.mode == "create":
                return await self._resolve_conflicts(batch, positions, started, exc.message,
                                                     maybe_ours=ambiguous)
            row = batch.rows[positions[0]]
            return Sent(rejects=[_reject_from(row, exc.status, exc.category, exc.message,
                                              exc.errors)])
        return await self._outcome(batch, positions, response, started,
                                   ambiguous or response.ambiguous)

    async def _outcome(self, batch: Batch, positions: list[int], response: Response,
                       started: float, ambiguous: bool) -> Sent:
        spec = self.spec
        keys = self.keys
        assert keys is not None
        rows = batch.rows
        fast = _fast_results(response.body, [rows[p] for p in positions], spec.mode)
        if fast is not None:
            out = Sent(results=fast)
            if self.spec.record_ids and batch.keys is not None and keys.key_column != RECORD_ID:
                key_of = {rows[p]: batch.keys[p] for p in positions}
                prop = keys.key_property or keys.id_property or ""
                out.ids = {(self._object_name, prop, key_of[row]): rid for row, rid, _ in fast}
            return out
        body = orjson.loads(response.body) if response.body else {}
        by_row = {rows[p]: p for p in positions}
        by_key: dict[str, int] | None = None
        out = Sent()
        placed: set[int] = set()
        fixed = {"create": "created", "update": "updated"}.get(spec.mode)
        remember = self.spec.record_ids and batch.keys is not None and (
            keys.key_column != RECORD_ID)
        prop = keys.key_property or keys.id_property or ""
        for result in body.get("results") or ():
            trace = result.get("objectWriteTraceId")
            try:
                position: int | None = by_row[int(trace)]
            except (KeyError, TypeError, ValueError):
                if by_key is None:
                    by_key = _by_key(batch, positions)
                position = _place(result, by_key, keys)
            if position is None or position in placed:
                continue
            placed.add(position)
            record_id = str(result.get("id"))
            action = fixed or ("created" if result.get("new") else "updated")
            out.results.append(Result(rows[position], record_id, action))
            if remember:
                assert batch.keys is not None
                out.ids[(self._object_name, prop, batch.keys[position])] = record_id
        conflicts: list[int] = []
        for error in body.get("errors") or ():
            context = error.get("context") or {}
            traced = [int(r) for r in context.get("objectWriteTraceId") or ()
                      if str(r).isdigit()]
            targets = [by_row[r] for r in traced if r in by_row]
            if not targets and batch.keys is not None:
                if by_key is None:
                    by_key = _by_key(batch, positions)
                targets = [by_key[str(i).lower()] for i in context.get("ids") or ()
                           if str(i).lower() in by_key]
            status = _int(error.get("status"))
            for position in targets:
                if position in placed:
                    continue
                placed.add(position)
                if spec.mode == "create" and (status == 409 or
                                              error.get("category") == "CONFLICT"):
                    conflicts.append(position)
                    continue
                out.rejects.append(_reject_from(batch.rows[position], status,
                                                error.get("category"), error.get("message"),
                                                error.get("errors")))
        if conflicts:
            out.merge(await self._resolve_conflicts(batch, conflicts, started,
                                                    "already exists", maybe_ours=ambiguous))
        missing = [p for p in positions if p not in placed]
        if missing and len(missing) < len(positions):
            out.merge(await self._send(batch, missing, started, ambiguous))
        elif missing:
            out.rejects += [Reject(batch.rows[p], "", "NO_RESULT",
                                   f"HubSpot answered {response.status} without a result or "
                                   "an error for this row", None) for p in missing]
        return out

    @property
    def _object_name(self) -> str:
        obj = self.spec.object_type
        return obj.name or obj.type_id

    # -- exactly-once for creates ----------------------------------------------------

    async def _read_by_key(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        prop = self.keys.key_property if self.keys else None
        assert prop is not None
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), 100):
            part = list(keys[start:start + 100])
            payload = {"idProperty": prop, "properties": [prop],
                       "inputs": [{"id": k} for k in part]}
            response = await self.client.post_json(
                _path(self.spec.object_type, "batch/read"), payload)
            for result in (response.json() or {}).get("results") or ():
                value = (result.get("properties") or {}).get(prop)
                if value is not None:
                    found[str(value).lower()] = result
        return found

    async def _reconcile(self, batch: Batch, positions: list[int],
                         started_at: float | None) -> tuple[Sent, list[int]]:
        """A create batch was in flight when the last run stopped: which rows landed?"""
        assert batch.keys is not None
        found = await self._read_by_key([batch.keys[p] for p in positions])
        landed = [p for p in positions if batch.keys[p].lower() in found]
        out = await self._claim(batch, landed, found, started_at or time.time(),
                                maybe_ours=True)
        rest = [p for p in positions if p not in set(landed)]
        if landed:
            log.info("batch %d: %d of %d rows had landed before the interruption; "
                     "sending the other %d", batch.seq, len(landed), len(positions), len(rest))
        return out, rest

    async def _resolve_conflicts(self, batch: Batch, positions: list[int], started: float,
                                 message: str, *, maybe_ours: bool) -> Sent:
        assert batch.keys is not None
        found = await self._read_by_key([batch.keys[p] for p in positions])
        out = await self._claim(batch, [p for p in positions if batch.keys[p].lower() in found],
                                found, started, maybe_ours=maybe_ours)
        for p in positions:
            if batch.keys[p].lower() not in found:
                out.rejects.append(Reject(batch.rows[p], self.keys.key_property or "",
                                          "CONFLICT", message, batch.keys[p])
                                   if self.keys else Reject(batch.rows[p], "", "CONFLICT",
                                                            message))
        return out

    async def _claim(self, batch: Batch, positions: list[int],
                     found: Mapping[str, Mapping[str, Any]], started: float, *,
                     maybe_ours: bool) -> Sent:
        """Records found by key: ours (created by this job) or someone else's (conflict).

        Ours when the key is hsbulk's import key, or when an attempt of ours may have
        landed unseen and the record was created after this batch first left.
        """
        assert batch.keys is not None and self.keys is not None
        prop = self.keys.key_property or ""
        ours_always = prop == self.spec.import_key
        out = Sent()
        foreign: list[tuple[int, str]] = []
        for p in positions:
            record = found[batch.keys[p].lower()]
            record_id = str(record.get("id"))
            created = _epoch_s(record.get("createdAt"))
            if ours_always or (maybe_ours and (created is None
                                               or created >= started - CLOCK_SKEW_S)):
                out.results.append(Result(batch.rows[p], record_id, "created"))
                out.ids[(self._object_name, prop, batch.keys[p])] = record_id
            else:
                foreign.append((p, record_id))
        if foreign and self.spec.on_conflict == "update":
            out.merge(await self._update_existing(batch, foreign))
        else:
            out.rejects += [Reject(batch.rows[p], prop, "CONFLICT",
                                   f"a record with {prop}={batch.keys[p]!r} already exists "
                                   f"(Existing ID: {rid}); use --on-conflict update to "
                                   "update it", batch.keys[p]) for p, rid in foreign]
        return out

    async def _update_existing(self, batch: Batch, targets: list[tuple[int, str]]) -> Sent:
        inputs = []
        for p, record_id in targets:
            source = orjson.loads(batch.inputs[p])
            inputs.append(orjson.dumps({"id": record_id, "properties": source["properties"],
                                        "objectWriteTraceId": str(batch.rows[p])}).decode())
        update = Batch(batch.seq, [batch.rows[p] for p, _ in targets],
                       [batch.keys[p] for p, _ in targets] if batch.keys else None, inputs)
        out = Sent()
        try:
            response = await self.client.request(
                "POST", _path(self.spec.object_type, "batch/update"), body=update.body)
        except ApiError as exc:
            if isinstance(exc, RetryableApiError | FatalApiError):
                raise
            return Sent(rejects=[_reject_from(r, exc.status, exc.category, exc.message,
                                              exc.errors) for r in update.rows])
        results = (response.json() or {}).get("results") or ()
        by_id = {rid: p for p, (_, rid) in enumerate(targets)}
        for result in results:
            where = by_id.get(str(result.get("id")))
            if where is not None:
                out.results.append(Result(update.rows[where], str(result["id"]), "updated"))
        done = {r[0] for r in out.results}
        out.rejects += [Reject(r, "", "NO_RESULT", "the update of the existing record "
                               "returned no result") for r in update.rows if r not in done]
        return out

    # -- the account ------------------------------------------------------------------

    async def _summary(self, started: float) -> Summary:
        counts = await self.journal.call(self.checkpoint.counts, self.spec.step)
        elapsed = time.monotonic() - started
        stats = self.client.stats
        state = "done" if self.state.stop_reason is None else "stopped"
        summary = Summary(
            step=self.spec.step, object=str(self.spec.object_type), mode=self.spec.mode,
            rows_read=self.state.rows_read, created=counts.created, updated=counts.updated,
            unchanged=counts.unchanged, rejected=counts.rejected,
            api_calls=stats.api_calls - self._stats_at_start[0],
            http_429=stats.http_429 - self._stats_at_start[1],
            retries=stats.retries - self._stats_at_start[2], elapsed_s=round(elapsed, 3),
            records_per_s=round(self.state.sent_rows / elapsed, 1) if elapsed else 0.0,
            state=state, stop_reason=self.state.stop_reason,
            checkpoint=str(self.checkpoint.path), resumed=self.resumed, notes=self.notes,
        )
        if state == "done":
            await self.journal.call(self.checkpoint.set_job_state, self.spec.step, "DONE")
        return summary


def estimate_rows(source: Source) -> int | None:
    """Data rows in the input, for the progress bar's total (None when not cheap)."""
    total = 0
    try:
        for path in source.files:
            if source.format == "parquet":
                lazy = pl.scan_parquet(path)
            elif source.format == "csv":
                lazy = pl.scan_csv(path, infer_schema=False, separator=source.spec.delimiter,
                                   quote_char=source.spec.quote_char)
            else:
                return None
            total += int(lazy.select(pl.len()).collect().item())
    except (pl.exceptions.PolarsError, OSError):
        return None
    return total


def _first_engine_error(group: BaseExceptionGroup[BaseException]) -> EngineError | None:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first_engine_error(exc)
            if found is not None:
                return found
        elif isinstance(exc, EngineError):
            return exc
    return None


def _without(spec: MappingSpec, column: str) -> MappingSpec:
    """The mapping without the record-id column (it is the input's id, not a property)."""
    return MappingSpec(
        pairs=tuple(p for p in spec.pairs if p[0] != column), file=spec.file, auto=spec.auto,
        reserved=spec.reserved | {column}, strict_columns=spec.strict_columns,
        ignore_unknown=spec.ignore_unknown)


_RESULT_ID = re.compile(rb'"id":"(\d+)"')
_TRACE_ID = re.compile(rb'"objectWriteTraceId":"(\d+)"')
_NEW_FLAG = re.compile(rb'"new":(true|false)')


def _fast_results(body: bytes, rows: Sequence[int],
                  mode: Mode) -> list[tuple[int, str, str]] | None:
    """Read a clean answer narrowly: one (id, trace id) pair per input, nothing else.

    Walking the decoded echo of 100 records cost more than the rest of the client. In
    JSON text a quote inside a string is always escaped, so `"id":"` can only be a key
    named `id` (at some depth: a nested one makes the counts differ);
    any doubt (errors, counts that differ, traces that are not these rows) returns None
    and the full decoder takes over.
    """
    if b'"errors"' in body:
        return None
    ids = _RESULT_ID.findall(body)
    traces = _TRACE_ID.findall(body)
    if len(ids) != len(rows) or len(traces) != len(rows):
        return None
    traced = list(map(int, traces))
    if set(traced) != set(rows) or len(set(traced)) != len(rows):
        return None
    if mode == "upsert":
        flags = _NEW_FLAG.findall(body)
        if len(flags) != len(rows):
            return None
        actions = ["created" if flag == b"true" else "updated" for flag in flags]
    else:
        actions = ["created" if mode == "create" else "updated"] * len(rows)
    return list(zip(traced, [i.decode() for i in ids], actions, strict=True))


def _by_key(batch: Batch, positions: Sequence[int]) -> dict[str, int]:
    if batch.keys is None:
        return {}
    return {batch.keys[p].lower(): p for p in positions}


def _place(result: Mapping[str, Any], by_key: Mapping[str, int], keys: KeyPlan) -> int | None:
    """Where a result without a usable trace id belongs: by record id or by key value."""
    if keys.key_column == RECORD_ID:
        return by_key.get(str(result.get("id")))
    prop = keys.key_property or keys.id_property
    if prop is not None:
        value = (result.get("properties") or {}).get(prop)
        if value is not None:
            return by_key.get(str(value).lower())
    return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _reject_from(row: int, status: int | None, category: Any, message: Any,
                 errors: Any) -> Reject:
    code = str(category or status or "REJECTED")
    column = ""
    if isinstance(errors, list) and errors:
        first = errors[0] if isinstance(errors[0], dict) else {}
        code = str(first.get("code") or code)
        names = (first.get("context") or {}).get("propertyName") or []
        column = str(names[0]) if names else ""
    return Reject(row, column, code, str(message or f"HTTP {status}"), None)


def _epoch_s(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def expected_calls(rows: int, batch_size: int = 100) -> int:
    return math.ceil(rows / batch_size)


async def run_import(client: HubSpotClient, checkpoint_path: Path, spec: ImportSpec, *,
                     progress: ProgressView | None = None,
                     stop: StopRequest | None = None,
                     restart: bool = False) -> tuple[Summary, int]:
    """Run one step; returns the summary and the exit code it calls for.

    The same input and spec as a finished run of this journal: nothing is sent, and its
    stored summary and code come back. `restart`: a new run even so (see `begin_run`)."""
    request = await anyio.to_thread.run_sync(import_request, spec)
    checkpoint = SqliteCheckpoint(checkpoint_path)
    try:
        finished = checkpoint.begin_run(request, restart=restart)
        if finished is not None:
            (summary,), code = stored_result(finished)
            return summary, code
        runner = StepRunner(client, checkpoint, spec, progress=progress, stop=stop)
        summary = await runner.run()
        code = runner.state.stop_code or (1 if summary.rejected else 0)
        if not runner.state.stop_code:
            checkpoint.finish_run([summary.as_dict()], code)
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
        if results is not None:
            key = spec.id_property or (spec.import_key if spec.mode == "create" else RECORD_ID)
            write_frame(results, results_frame(checkpoint.iter_keyed_results(spec.step), key))
        if rejects is not None:
            table = frame_of(checkpoint.iter_rejects(spec.step), REJECT_FIELDS)
            write_frame(rejects, _with_original_fields(table, spec))
    finally:
        checkpoint.close()


def _with_original_fields(rejects: pl.DataFrame, spec: ImportSpec) -> pl.DataFrame:
    """Join each reject with its row as read (one more streaming pass, rejects only)."""
    if rejects.height == 0:
        return rejects_frame(rejects, pl.DataFrame(
            schema={ROW: pl.Int64, **dict.fromkeys(open_source(spec.source).columns,
                                                    pl.String)}))
    wanted = rejects.get_column(ROW).unique().implode()
    source = open_source(spec.source)
    originals = [frame.filter(pl.col(ROW).cast(pl.Int64).is_in(wanted))
                 for frame in source.batches(check=False)]
    rows = pl.concat([f.with_columns(pl.col(ROW).cast(pl.Int64)) for f in originals],
                     how="vertical_relaxed") if originals else None
    return rejects_frame(rejects, rows)
