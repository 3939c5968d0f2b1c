"""Associations: natural key -> record id, label -> type id, and v4 batch association calls.

A step's associations are written after its records (every target step ran before it):
the source is read again for the key columns, each row's record id comes from the step's
journaled results, each target key resolves through the journal's id map and then, for
keys this job did not write, batch reads by `idProperty` (cached back into the id map).
A rule names a step of the job (`to`) or only an object (`object`, `hsbulk import
--associate`): records already in HubSpot, or written by another step. Keys are compared
as HubSpot compares them (`target_key`: domains cleaned, case ignored).
Edges go out through `crm/v4/associations/{from}/{to}/batch/create` (labeled) or
`batch/associate/default`, filling every call up to the endpoint's input limit. Both are
idempotent, so the journal protocol needs no read-back: an IN_FLIGHT batch is resent.
A row whose target does not exist is reported; it never blocks the record itself.

In delta mode (`EdgeDelta`: a job step with `delta`, its state open) an edge is sent only
when the state did not hold it when the run started; every edge of today's input is
marked seen (the mirror removes those not seen), and the written ones are confirmed in
the state after their batch is DONE in the journal. Each batch journals its edges' keys,
so a resumed run tells the edges its earlier attempt confirmed from those the state held
before, and builds the same batches.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import orjson
import polars as pl

from engine.client import HubSpotClient
from engine.errors import ApiError, ConfigError, FatalApiError, RetryableApiError
from engine.imports.plan import NATURAL_KEYS, RECORD_ID
from engine.imports.reconcile import KeyReader
from engine.interrupt import StopRequest
from engine.journal import BatchState, DeltaStore, Edge, JournalThread, Reject, SqliteCheckpoint
from engine.schema import ObjectType, Schema, canonical_object, fetch_schema
from engine.source import SOURCE_ROW as ROW
from engine.source import Source
from engine.values import clean_key

log = logging.getLogger("hsbulk.associations")

DEFAULT_INPUT_LIMIT = 2_000


@dataclass(frozen=True, slots=True)
class AssociationRule:
    """`[[steps.associations]]` or `--associate`: link each row to the record of `to_object`
    whose unique property `key` equals the row's `column` value: a record of the `to_step`
    step, or (`to_step` None) any record of that object, already in HubSpot or written by
    an earlier step of the job."""

    to_step: str | None
    to_object: ObjectType
    column: str
    key: str
    label: str | None = None
    type_id: int | None = None
    create_label: bool = False
    inverse_label: str | None = None

    @property
    def target(self) -> str:
        """The target object's name (its type id for a custom object)."""
        return self.to_object.name or self.to_object.type_id

    def step_key(self, step: str) -> str:
        if self.to_step is None:
            return f"{step}>{self.target}.{self.key}:{self.column}"
        return f"{step}>{self.to_step}:{self.column}"


ASSOCIATE_SYNTAX = "OBJECT:KEY=COLUMN[:LABEL]"


def parse_associate(text: str) -> AssociationRule:
    """`--associate "companies:domain=Company Domain"` (optionally `...:Primary`, a label).

    The label follows the last `:` after the `=`; a column whose name holds a `:` ends the
    text with an empty label (`"companies:domain=Site: URL:"`)."""
    obj, colon, rest = text.partition(":")
    key, equals, rest = rest.partition("=")
    column, _, label = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not (colon and equals and obj.strip() and key.strip() and column.strip()):
        raise ConfigError(f"--associate {text!r}: expected {ASSOCIATE_SYNTAX}, e.g. "
                          "'companies:domain=Company Domain' or "
                          "'companies:domain=Company Domain:Primary'")
    return AssociationRule(None, canonical_object(obj), column.strip(), key.strip(),
                           label=label.strip() or None)


def target_key(rule: AssociationRule, value: pl.Expr) -> pl.Expr:
    """A row's target key as HubSpot compares it: a domain cleaned (`https://www.Acme.de/x`
    -> `acme.de`), anything else trimmed; lower case (unique values ignore case)."""
    return clean_key(rule.key.lower(), value).str.to_lowercase()


async def check_target_keys(client: HubSpotClient, rules: Iterable[AssociationRule]) -> None:
    """Rules to existing records: their key must identify one record of the target object
    (a unique-value property, its natural key or the record id); a ConfigError before any
    write otherwise."""
    schemas: dict[str, Schema] = {}
    for rule in rules:
        if rule.to_step is not None:
            continue
        if rule.target not in schemas:
            schemas[rule.target] = await fetch_schema(client, rule.to_object)
        prop = schemas[rule.target].get(rule.key)
        if prop is None:
            raise ConfigError(f"association key {rule.key!r} is not a property of "
                              f"{rule.to_object}")
        if not (prop.unique or prop.name in (RECORD_ID, NATURAL_KEYS.get(rule.target))):
            unique = [p.name for p in schemas[rule.target].unique_properties]
            raise ConfigError(
                f"association key {rule.key!r} does not identify one {rule.to_object} record "
                f"(no unique values); use {', '.join([RECORD_ID, *unique])}")


@dataclass(frozen=True, slots=True)
class AssociationType:
    category: str
    type_id: int


@dataclass(frozen=True, slots=True)
class EdgeDelta:
    """A delta step's state, open while its associations are written."""

    store: DeltaStore
    run_id: int
    key_column: str  # the input column holding the step's natural key
    resend: bool = False  # `delta = "refresh"`: every edge is sent again


DEFAULT_TYPE_ID = 0  # an edge written by `batch/associate/default`, in the state


@dataclass(slots=True)
class AssociationOutcome:
    edges: int = 0
    rejected_rows: int = 0
    calls: int = 0


def _path(frm: ObjectType, to: ObjectType, tail: str) -> str:
    return f"/crm/v4/associations/{frm.path_name}/{to.path_name}/{tail}"


def _label_name(label: str) -> str:
    name = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_") or "label"
    return f"label_{name}" if name[0].isdigit() else name  # HubSpot: no leading digit


async def resolve_type(client: HubSpotClient, frm: ObjectType, to: ObjectType,
                       rule: AssociationRule) -> AssociationType | None:
    """The association type to write: by label name or type id; None for the default."""
    if rule.label is None and rule.type_id is None:
        return None
    labels = await _labels(client, frm, to)
    if rule.label is None:
        for entry in labels:
            if entry.get("typeId") == rule.type_id:
                return AssociationType(str(entry.get("category")), int(entry["typeId"]))
        raise ConfigError(f"association type id {rule.type_id} does not exist between {frm} "
                          f"and {to}; known: {_known(labels)}")
    wanted = rule.label.strip().lower()
    found = _by_label(labels, wanted)
    if found is None and rule.create_label:
        body: dict[str, Any] = {"name": _label_name(rule.label), "label": rule.label}
        if rule.inverse_label:
            body["inverseLabel"] = rule.inverse_label
        try:
            await client.post_json(_path(frm, to, "labels"), body)
            log.info("created association label %r between %s and %s", rule.label, frm, to)
        except ApiError as exc:
            # An earlier attempt whose answer was lost, or another client, may have created
            # it in the meantime: HubSpot then refuses the name. Any other refusal stands.
            if exc.status not in (400, 409) or "already exists" not in exc.message:
                raise
        found = _by_label(await _labels(client, frm, to), wanted)
    if found is None:
        raise ConfigError(f"no association label {rule.label!r} between {frm} and {to} "
                          f"(known: {_known(labels)}); add create_label = true to create it")
    return found


async def inline_association(client: HubSpotClient, checkpoint: SqliteCheckpoint,
                             obj: ObjectType, source: Source, rule: AssociationRule, *,
                             thread: JournalThread | None = None,
                             ) -> tuple[AssociationType, dict[str, str]]:
    """What a create step needs to write `rule` inside its create calls: the type to use
    (the pair's unlabeled HubSpot-defined type by default) and the target ids by the rows'
    cells (trimmed, lower case: as the create calls look them up)."""
    kind = await resolve_type(client, obj, rule.to_object, rule)
    if kind is None:
        unlabeled = [e for e in await _labels(client, obj, rule.to_object)
                     if not e.get("label") and e.get("category") == "HUBSPOT_DEFINED"]
        if not unlabeled:
            raise ConfigError(f"no unlabeled association type between {obj} and "
                              f"{rule.to_object}; give a label or type_id")
        kind = AssociationType("HUBSPOT_DEFINED", int(unlabeled[0]["typeId"]))
    cells = await anyio.to_thread.run_sync(_column_keys, source, rule)
    ids = await KeyResolver(client, checkpoint, thread).resolve(
        rule.to_object, rule.key, cells.values())
    return kind, {cell: ids[key] for cell, key in cells.items() if key in ids}


def _check_column(source: Source, column: str) -> None:
    if column not in source.columns:
        raise ConfigError(f"association column {column!r} is not in {source.spec.path} "
                          f"(columns: {', '.join(source.columns)})")


def _column_keys(source: Source, rule: AssociationRule) -> dict[str, str]:
    """Each distinct non-empty cell of the rule's column (trimmed, lower case) -> its key."""
    _check_column(source, rule.column)
    cells: dict[str, str] = {}
    for batch in source.batches(check=False):
        pairs = batch.select(
            pl.col(rule.column).str.strip_chars().str.to_lowercase().alias("cell"),
            target_key(rule, pl.col(rule.column)).alias(TARGET)).unique()
        cells.update(pairs.filter(pl.col("cell").is_not_null() & (pl.col("cell") != ""))
                     .iter_rows())
    return cells


async def _labels(client: HubSpotClient, frm: ObjectType, to: ObjectType) -> list[dict[str, Any]]:
    body = await client.get_json(_path(frm, to, "labels"))
    results = body.get("results") if isinstance(body, dict) else None
    return [r for r in results or () if isinstance(r, dict)]


def _by_label(labels: Iterable[Mapping[str, Any]], wanted: str) -> AssociationType | None:
    for entry in labels:
        if str(entry.get("label") or "").strip().lower() == wanted:
            return AssociationType(str(entry.get("category")), int(entry["typeId"]))
    return None


def _known(labels: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"{e.get('label') or '(unlabeled)'}={e.get('typeId')}" for e in labels)


class KeyResolver:
    """Natural key -> record id: the journal's id map, then reads by key (cached)."""

    def __init__(self, client: HubSpotClient, checkpoint: SqliteCheckpoint,
                 thread: JournalThread | None = None,
                 states: Mapping[tuple[str, str], DeltaStore] | None = None) -> None:
        self.reader = KeyReader(client)
        self.checkpoint = checkpoint
        self.thread = thread or JournalThread()
        self.states = states or {}  # (object, key property) -> that step's delta state

    async def resolve(self, obj: ObjectType, prop: str, keys: Iterable[str]) -> dict[str, str]:
        """Lower-cased key -> id for the keys that exist (a record id must be digits)."""
        name = obj.name or obj.type_id
        wanted = sorted({k.lower() for k in keys if k and (prop != RECORD_ID or k.isdigit())})
        found: dict[str, str] = await self.thread.call(
            self.checkpoint.lookup_ids, name, prop, wanted)
        missing = [k for k in wanted if k not in found]
        state = self.states.get((name, prop.lower()))
        if state is not None and missing:  # written by an earlier night of a delta step
            held = await self.thread.call(state.lookup, missing)
            found.update({key: rid for key, (rid, _) in held.items()})
            missing = [k for k in missing if k not in found]
        read = await self.reader.read(obj, prop, missing) if missing else {}
        found.update({key: record.id for key, record in read.items()})
        if read:
            await self.thread.call(self.checkpoint.remember_ids,
                                   {(name, prop, key): record.id for key, record in read.items()})
        return found


TARGET = "target"  # the row's target key, cleaned as HubSpot compares it (`target_key`)


def _keys(batch: pl.DataFrame, rule: AssociationRule) -> pl.DataFrame:
    """(source_row, key: the cell trimmed, target: its target key) of non-empty cells."""
    return batch.select(pl.col(ROW).cast(pl.Int64),
                        pl.col(rule.column).str.strip_chars().alias("key"),
                        target_key(rule, pl.col(rule.column)).alias(TARGET)
                        ).filter(pl.col("key").is_not_null() & (pl.col("key") != ""))


def _edge_frame(source: Source, rule: AssociationRule, results: pl.DataFrame) -> pl.DataFrame:
    """(source_row, key, target, from_id, action) for rows written by the step with a
    non-empty cell in the rule's column."""
    _check_column(source, rule.column)
    parts = [_keys(batch, rule) for batch in source.batches(check=False)]
    keys = pl.concat(parts) if parts else pl.DataFrame(
        schema={ROW: pl.Int64, "key": pl.String, TARGET: pl.String})
    return keys.join(results, on=ROW, how="inner").sort(ROW)


RESULTS = {ROW: pl.Int64, "from_id": pl.String, "action": pl.String}


def results_frame(checkpoint: SqliteCheckpoint, step: str) -> pl.DataFrame:
    frames = [pl.DataFrame(chunk, schema=RESULTS, orient="row")
              for chunk in checkpoint.iter_results(step)]
    return pl.concat(frames) if frames else pl.DataFrame(schema=RESULTS)


async def write_associations(
    client: HubSpotClient, checkpoint: SqliteCheckpoint, *, step: str, obj: ObjectType,
    source: Source, rule: AssociationRule, input_limit: int = DEFAULT_INPUT_LIMIT,
    inline: bool = False, stop: StopRequest | None = None,
    thread: JournalThread | None = None, delta: EdgeDelta | None = None,
    states: Mapping[tuple[str, str], DeltaStore] | None = None,
    report_under: str | None = None,
) -> AssociationOutcome:
    """Write one association rule of one step; resumable through the journal.

    `inline`: the step's create calls carried this association already, so only rows
    that were not created (e.g. updated after a conflict) still need a call.
    `delta`: send only the edges new since the state's last confirmed write (see the
    module docstring). `states`: delta states of target steps, to find target ids.
    `report_under`: also journal the rows whose target was not found under this step, as
    rejects that are not counted (`hsbulk import` lists them in its one rejects file).
    """
    key = rule.step_key(step)
    thread = thread or JournalThread()
    results = await thread.call(results_frame, checkpoint, step)
    if delta is None:
        frame = await anyio.to_thread.run_sync(_edge_frame, source, rule, results)
    else:
        refused = await thread.call(_refused_rows, checkpoint, step)
        frame = await anyio.to_thread.run_sync(_delta_edge_frame, source, rule, results,
                                               delta, refused)
    frame = await _with_targets(KeyResolver(client, checkpoint, thread, states), frame, rule)
    missing = frame.filter(pl.col("to_id").is_null() & pl.col(SEND))
    rejects = [Reject(row, rule.column, "ASSOCIATION_TARGET_NOT_FOUND",
                      f"no {rule.to_object} with {rule.key}={target!r}: the record was "
                      "written without this association", value)
               for row, value, target in missing.select(ROW, "key", TARGET).iter_rows()]
    if rejects:
        await thread.call(checkpoint.record_rejects, key, rejects)
        if report_under is not None:  # the row was written: not counted as rejected there
            await thread.call(checkpoint.record_rejects, report_under,
                              [r._replace(counted=False) for r in rejects])
    edges = frame.filter(pl.col("to_id").is_not_null()).unique(
        ["from_id", "to_id"], keep="first", maintain_order=True)
    carried = 0
    if inline:
        carried = edges.filter(pl.col("action") == "created").height
        edges = edges.filter(pl.col("action") != "created")
    kind: AssociationType | None = None
    ledger: _EdgeLedger | None = None
    if delta is not None:
        if rule.label is not None or rule.type_id is not None:  # the type is the edge's
            kind = await resolve_type(client, obj, rule.to_object, rule)
        ledger = _EdgeLedger(checkpoint, thread, key, rule.to_object, kind, delta)
        edges = await ledger.new_edges(edges)
    journal = await thread.call(checkpoint.batches, key)
    outcome = AssociationOutcome()
    batches = math.ceil(edges.height / input_limit)
    pending = [seq for seq in range(batches)
               if journal.get(seq) is None or journal[seq].state is not BatchState.DONE]
    if ledger is not None:  # a resumed run: DONE batches are confirmed again (idempotent)
        await ledger.reconfirm(edges, [seq for seq in range(batches) if seq not in pending],
                               input_limit)
    elif pending:
        kind = await resolve_type(client, obj, rule.to_object, rule)
    sender = _EdgeSender(client, obj, rule.to_object, kind, input_limit)
    for seq in pending:
        if stop is not None and stop.requested:
            break  # the rest is written by the next run
        part = edges.slice(seq * input_limit, input_limit)
        rows = part.get_column(ROW).to_list()
        keys = part.get_column(EDGE_KEY).to_list() if ledger is not None else None
        await thread.call(checkpoint.begin_batches, key, [(seq, rows, keys)])
        written, errors = await sender.send(part)
        await thread.call(checkpoint.record_edges, key, seq, written, errors)
        if ledger is not None:  # the journal has it DONE: now the state
            await ledger.confirm(part, {r.source_row for r in errors})
    outcome.calls = sender.calls
    counts = await thread.call(checkpoint.counts, key)
    outcome.edges = counts.created + carried
    outcome.rejected_rows = counts.rejected
    return outcome


SEND = "send"  # the row may get a new edge (delta: its record row was not rejected)
EDGE_KEY = "edge_key"  # an edge as its association batch journals it: from key, to id


async def _with_targets(resolver: KeyResolver, frame: pl.DataFrame,
                        rule: AssociationRule) -> pl.DataFrame:
    ids = await resolver.resolve(rule.to_object, rule.key, frame.get_column(TARGET).to_list())
    frame = frame.with_columns(
        pl.col(TARGET).replace_strict(ids, default=None, return_dtype=pl.String).alias("to_id"))
    return frame if SEND in frame.columns else frame.with_columns(pl.lit(True).alias(SEND))


def _refused_rows(checkpoint: SqliteCheckpoint, step: str) -> list[int]:
    return sorted({row[0] for chunk in checkpoint.iter_rejects(step) for row in chunk})


def _delta_edge_frame(source: Source, rule: AssociationRule, results: pl.DataFrame,
                      delta: EdgeDelta, refused: Sequence[int]) -> pl.DataFrame:
    """(source_row, from_id, action, key, from_key, send) for every input row with both
    keys: its record id from this run's results, else from the state (an unchanged row).
    A row refused today keeps its edges (they are seen) but gets no new one."""
    for column in (rule.column, delta.key_column):
        _check_column(source, column)
    from_key = pl.col(delta.key_column).str.strip_chars().str.to_lowercase()
    parts = [batch.select(
        pl.col(ROW).cast(pl.Int64), pl.col(rule.column).str.strip_chars().alias("key"),
        target_key(rule, pl.col(rule.column)).alias(TARGET), from_key.alias("from_key"))
        .filter(pl.col("key").is_not_null() & (pl.col("key") != "")
                & pl.col("from_key").is_not_null() & (pl.col("from_key") != ""))
        for batch in source.batches(check=False)]
    keys = pl.concat(parts) if parts else pl.DataFrame(
        schema={ROW: pl.Int64, "key": pl.String, TARGET: pl.String, "from_key": pl.String})
    held = delta.store.lookup(keys.get_column("from_key").unique().sort().to_list())
    state_ids = {k: rid for k, (rid, _) in held.items()}
    frame = keys.join(results, on=ROW, how="left").with_columns(
        pl.col("from_id").fill_null(
            pl.col("from_key").replace_strict(state_ids, default=None, return_dtype=pl.String)),
        pl.col("action").fill_null("unchanged"),
        (pl.col("from_id").is_not_null()  # written today (a dropped field still is)
         | ~pl.col(ROW).is_in(pl.Series(refused, dtype=pl.Int64).implode())).alias(SEND))
    return frame.filter(pl.col("from_id").is_not_null()).sort(ROW)


def _edge_key(from_key: str, to_id: str) -> str:
    return f"{from_key}\x1f{to_id}"


class _EdgeLedger:
    """One rule's edges against the delta state: which are new, and confirming them."""

    def __init__(self, checkpoint: SqliteCheckpoint, thread: JournalThread, key: str,
                 to: ObjectType, kind: AssociationType | None, delta: EdgeDelta) -> None:
        self.checkpoint = checkpoint
        self.call = thread.call
        self.key = key
        self.to_object = to.name or to.type_id
        self.type_id = kind.type_id if kind else DEFAULT_TYPE_ID
        self.category = kind.category if kind else "HUBSPOT_DEFINED"
        self.delta = delta

    def edge(self, from_key: str, to_id: str) -> Edge:
        return Edge(from_key, self.to_object, to_id, self.type_id, self.category)

    async def new_edges(self, edges: pl.DataFrame) -> pl.DataFrame:
        """Mark every edge of today's input seen; keep those to send (with their keys):
        the edges the state did not hold when the run started (the state's edges less
        those an earlier attempt of this run journaled), of rows not refused."""
        delta = self.delta
        today = [self.edge(f, t) for f, t in edges.select("from_key", "to_id").iter_rows()]
        await self.call(delta.store.mark_edges_seen, today, delta.run_id)
        edges = edges.with_columns(pl.concat_str("from_key", pl.lit(_edge_key("", "")),
                                                  "to_id").alias(EDGE_KEY))
        send = pl.col(SEND)
        if not delta.resend:
            held = await self.call(delta.store.edges_of,
                                   sorted({e.from_key for e in today}))
            batches = await self.call(self.checkpoint.batches, self.key)
            mine = {k for record in batches.values() for k in record.keys or ()}
            known = {_edge_key(e.from_key, e.to_id) for e in held
                     if e.to_object == self.to_object and e.type_id == self.type_id}
            send = send & ~pl.col(EDGE_KEY).is_in(pl.Series(sorted(known - mine),
                                                            dtype=pl.String).implode())
        return edges.filter(send)

    async def confirm(self, part: pl.DataFrame, failed: set[int]) -> None:
        """The batch is DONE in the journal: its written edges go into the state."""
        written = [self.edge(f, t) for row, f, t in part.select(ROW, "from_key", "to_id")
                   .iter_rows() if row not in failed]
        await self.call(self.delta.store.confirm_edges, written, self.delta.run_id)

    async def reconfirm(self, edges: pl.DataFrame, done: Sequence[int], limit: int) -> None:
        """Batches an earlier attempt of this run had DONE: confirm them again."""
        if not done:
            return
        failed = set(await self.call(_refused_rows, self.checkpoint, self.key))
        for seq in done:
            await self.confirm(edges.slice(seq * limit, limit), failed)


class _EdgeSender:
    """Sends edges, splitting a call the endpoint finds too large (and remembering that)."""

    def __init__(self, client: HubSpotClient, frm: ObjectType, to: ObjectType,
                 kind: AssociationType | None, limit: int) -> None:
        self.client = client
        self.path = _path(frm, to, "batch/create" if kind else "batch/associate/default")
        self.kind = kind
        self.limit = limit
        self.calls = 0

    def _inputs(self, part: pl.DataFrame) -> list[dict[str, Any]]:
        types = ([{"associationCategory": self.kind.category,
                   "associationTypeId": self.kind.type_id}] if self.kind else None)
        out: list[dict[str, Any]] = []
        for from_id, to_id in part.select("from_id", "to_id").iter_rows():
            item: dict[str, Any] = {"from": {"id": from_id}, "to": {"id": to_id}}
            if types is not None:
                item["types"] = types
            out.append(item)
        return out

    async def send(self, part: pl.DataFrame) -> tuple[int, list[Reject]]:
        if part.height > self.limit:
            half = part.height // 2
            a = await self.send(part.slice(0, half))
            b = await self.send(part.slice(half))
            return a[0] + b[0], a[1] + b[1]
        self.calls += 1
        try:
            response = await self.client.request(
                "POST", self.path, body=orjson.dumps({"inputs": self._inputs(part)}))
        except (FatalApiError, RetryableApiError):
            raise
        except ApiError as exc:
            if exc.status == 400 and "limit" in exc.message.lower() and part.height > 1:
                self.limit = max(1, part.height // 2)
                log.info("association calls limited to %d inputs", self.limit)
                return await self.send(part)
            return 0, [Reject(row, "", str(exc.category or exc.status), exc.message, None)
                       for row in part.get_column(ROW).to_list()]
        errors = (response.json() or {}).get("errors") or ()
        if not errors:
            return part.height, []
        by_side: dict[str, dict[str, list[int]]] = {"fromObjectId": {}, "toObjectId": {}}
        for row, from_id, to_id in part.select(ROW, "from_id", "to_id").iter_rows():
            by_side["fromObjectId"].setdefault(from_id, []).append(row)
            by_side["toObjectId"].setdefault(to_id, []).append(row)
        failed: dict[int, Reject] = {}
        for error in errors:
            context = error.get("context") or {}
            for side, rows_of in by_side.items():
                for record_id in context.get(side) or ():
                    for row in rows_of.get(str(record_id), ()):
                        failed[row] = Reject(
                            row, "", str(error.get("category") or "ASSOCIATION_FAILED"),
                            str(error.get("message")), None)
        return part.height - len(failed), list(failed.values())
