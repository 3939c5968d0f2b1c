"""Mirror (`--mirror`): archive what this state wrote and today's input no longer holds.

After a delta run's import pass, the state knows which natural keys today's input held
(`mark_seen`); the records it wrote earlier whose key was not seen are archived
(`POST /crm/v3/objects/{type}/batch/archive`, 100 a call) and then forgotten, and the
association edges it wrote earlier and did not see today are removed (v4
`batch/archive`). A record or an edge this state did not write is never touched.

The guard (`--max-archive N|P%`, default 5% of the state's records) is checked for
records and for edges before anything is archived: above it the run refuses (a
`ConfigError`, exit 2) and says how many would go. Crash safety: each archive call is
journaled IN_FLIGHT (with its keys) before it leaves and DONE after its answer, and the
state forgets the keys only after the journal has them DONE; a resumed run forgets the
keys of DONE calls again (idempotent) before it looks for what is absent, and archiving
twice is harmless.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.client import HubSpotClient
from engine.errors import ConfigError
from engine.imports.plan import ImportSpec, StepPlan, object_path
from engine.journal import (
    BatchState,
    DeltaStore,
    Edge,
    JournalThread,
    SqliteCheckpoint,
    Transition,
)
from engine.schema import ObjectType, canonical_object
from engine.source import Source

log = logging.getLogger("hsbulk.mirror")

ARCHIVE_LIMIT = 100  # inputs per objects batch/archive
UNLINK_LIMIT = 100  # inputs (one `from` each) per v4 batch/archive
DEFAULT_MAX_ARCHIVE = "5%"

_Forget = Callable[[Sequence[str]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class MaxArchive:
    """`--max-archive N|P%`: how much a mirror run may archive before it refuses."""

    count: int | None = None
    percent: float | None = 5.0

    @classmethod
    def parse(cls, text: object) -> MaxArchive:
        raw = str(text).strip()
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", raw)
        if match and float(match.group(1)) <= 100:
            return cls(None, float(match.group(1)))
        if re.fullmatch(r"\d+", raw) and not isinstance(text, bool):
            return cls(int(raw), None)
        raise ConfigError(f"max archive {text!r}: give a number of records (e.g. 500) or a "
                          "percentage of the state's records (e.g. 5%)")

    def limit(self, total: int) -> int:
        """The most that may be archived out of `total` held by the state."""
        if self.count is not None:
            return self.count
        return math.floor(total * (self.percent or 0.0) / 100 + 1e-9)

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{self.percent:g}%"


def check_guard(what: str, absent: int, total: int, guard: MaxArchive) -> None:
    """Refuse (exit 2) when more than the guard allows would be archived."""
    allowed = guard.limit(total)
    if absent > allowed:
        raise ConfigError(
            f"--mirror would archive {absent:,} {what} of the {total:,} this state wrote, "
            f"above --max-archive {guard} ({allowed:,}); nothing was archived. Check the "
            "input, or raise --max-archive to archive them")


@dataclass(slots=True)
class MirrorOutcome:
    archived: int = 0  # records archived (this run and the runs it resumes)
    unlinked: int = 0  # association edges removed
    calls: int = 0
    planned: list[tuple[str, str]] = field(default_factory=list)  # dry run: (key, id)


def archive_step(step: str) -> str:
    return f"{step}:archive"


def unlink_step(step: str) -> str:
    return f"{step}:unlink"


class Mirror:
    """Archives one step's absent records (and unlinks its absent edges) under the guard."""

    def __init__(self, client: HubSpotClient, checkpoint: SqliteCheckpoint,
                 thread: JournalThread, store: DeltaStore, *, step: str, obj: ObjectType,
                 run_id: int, guard: MaxArchive) -> None:
        self.client = client
        self.checkpoint = checkpoint
        self.call = thread.call
        self.store = store
        self.step = step
        self.obj = obj
        self.run_id = run_id
        self.guard = guard

    async def run(self, *, edges: bool = False) -> MirrorOutcome:
        """Settle what an interrupted run left, check the guard, then archive and unlink."""
        outcome = MirrorOutcome()
        await self._settle(archive_step(self.step), self._forget_keys)
        if edges:
            await self._settle(unlink_step(self.step), self._forget_edges)
        records = await self.call(lambda: list(self.store.absent(self.run_id)))
        check_guard("records", len(records), await self.call(self.store.size), self.guard)
        absent_edges: list[Edge] = []
        if edges:
            absent_edges = await self.call(lambda: list(self.store.absent_edges(self.run_id)))
            gone = {key for key, _ in records}
            stale = [e for e in absent_edges if e[0] in gone]  # leave with their record
            absent_edges = [e for e in absent_edges if e[0] not in gone]
            check_guard("associations", len(absent_edges),
                        await self.call(self._edge_total), self.guard)
        await self._archive(sorted(records), outcome)
        if edges:
            if stale:
                await self.call(self.store.forget_edges, stale)
            await self._unlink(sorted(absent_edges), outcome)
        counts = await self.call(self.checkpoint.counts, archive_step(self.step))
        outcome.archived = counts.created
        if edges:
            outcome.unlinked = (await self.call(self.checkpoint.counts,
                                                unlink_step(self.step))).created
        return outcome

    def _edge_total(self) -> int:
        """Every edge the state holds (no run has the id -1: none of them was seen in it)."""
        return sum(1 for _ in self.store.absent_edges(-1))

    async def _settle(self, journal_step: str, forget: _Forget) -> None:
        """Calls a crashed run had answered (DONE): make sure the state forgot them."""
        batches = await self.call(self.checkpoint.batches, journal_step)
        for record in batches.values():
            if record.state is BatchState.DONE and record.keys:
                await forget(record.keys)

    async def _forget_keys(self, keys: Sequence[str]) -> None:
        await self.call(self.store.forget, list(keys))

    async def _forget_edges(self, keys: Sequence[str]) -> None:
        await self.call(self.store.forget_edges, [_edge_of(k) for k in keys])

    async def _next_seq(self, journal_step: str) -> int:
        batches = await self.call(self.checkpoint.batches, journal_step)
        return max(batches, default=-1) + 1

    async def _archive(self, records: Sequence[tuple[str, str]], outcome: MirrorOutcome
                       ) -> None:
        journal_step = archive_step(self.step)
        seq = await self._next_seq(journal_step)
        path = object_path(self.obj, "batch/archive")
        for start in range(0, len(records), ARCHIVE_LIMIT):
            part = records[start:start + ARCHIVE_LIMIT]
            keys = [key for key, _ in part]
            await self._journal(Transition.begin(journal_step, seq, _rows(part), keys))
            await self.client.post_json(path, {"inputs": [{"id": rid} for _, rid in part]})
            outcome.calls += 1
            await self._journal(Transition.edges_written(journal_step, seq, len(part)))
            await self._forget_keys(keys)
            seq += 1
        if records:
            log.info("mirror: archived %d %s records absent from the input", len(records),
                     self.obj)

    async def _unlink(self, edges: Sequence[Edge], outcome: MirrorOutcome) -> None:
        """v4 batch/archive per target object, one input per (from, to) pair."""
        journal_step = unlink_step(self.step)
        seq = await self._next_seq(journal_step)
        from_ids = await self.call(self.store.lookup, sorted({e[0] for e in edges}))
        by_target: dict[str, list[Edge]] = {}
        for edge in edges:
            if edge[0] in from_ids:
                by_target.setdefault(edge[1], []).append(edge)
        for to_object, group in sorted(by_target.items()):
            path = (f"/crm/v4/associations/{self.obj.path_name}/"
                    f"{canonical_object(to_object).path_name}/batch/archive")
            for start in range(0, len(group), UNLINK_LIMIT):
                part = group[start:start + UNLINK_LIMIT]
                keys = [_edge_key(e) for e in part]
                await self._journal(Transition.begin(journal_step, seq, _rows(part), keys))
                inputs = [{"from": {"id": from_ids[e[0]][0]}, "to": [{"id": e[2]}]}
                          for e in part]
                await self.client.post_json(path, {"inputs": inputs})
                outcome.calls += 1
                await self._journal(Transition.edges_written(journal_step, seq, len(part)))
                await self._forget_edges(keys)
                seq += 1

    async def _journal(self, transition: Transition) -> None:
        await self.call(self.checkpoint.apply, [transition])


def _rows(part: Sequence[object]) -> list[int]:
    """Archive calls have no source rows: their positions stand in (the journal needs some)."""
    return list(range(1, len(part) + 1))


def _edge_key(edge: Edge) -> str:
    """An edge as the journal's batch key (the state forgets it by these four fields)."""
    return "\x1f".join((edge.from_key, edge.to_object, edge.to_id, str(edge.type_id)))


def _edge_of(key: str) -> Edge:
    from_key, to_object, to_id, type_id = key.split("\x1f")
    return Edge(from_key, to_object, to_id, int(type_id))


def render_plan(records: Iterable[tuple[str, str]], total: int, guard: MaxArchive) -> str:
    """`--dry-run --mirror`: the records that would be archived, one `id  key` a line."""
    listed = sorted(records, key=lambda r: r[0])
    allowed = guard.limit(total)
    head = (f"--mirror would archive {len(listed):,} of the {total:,} records this state "
            f"wrote (--max-archive {guard}: {allowed:,})"
            + ("; above the guard, a real run would refuse" if len(listed) > allowed else ""))
    return "\n".join([head, *(f"{rid}\t{key}" for key, rid in listed)])


def planned_archive(store: DeltaStore, present: set[str]) -> list[tuple[str, str]]:
    """`--dry-run --mirror`: (key, id) of the records this state wrote whose key is not in
    `present` (today's input keys, case-folded). Reads the state only (no run is begun:
    no run has the id -1, so `absent(-1)` is every record the state holds)."""
    return [(key, rid) for key, rid in store.absent(-1) if key not in present]


def key_source(step: StepPlan) -> str | None:
    """The input column holding each row's natural key (as read, before normalising)."""
    if step.id_source is not None:
        return step.id_source
    prop = step.keys.key_property or step.keys.id_property
    return next((t.column for t in step.mapping.targets
                 if t.property == prop and t.column is not None), None)


def input_keys(source: Source, column: str) -> Iterator[list[str]]:
    """Each batch's keys as the state folds them, every row's (rejected ones included)."""
    for batch in source.batches(check=False):
        keys = batch.get_column(column).str.strip_chars().str.to_lowercase()
        yield keys.filter(keys.is_not_null() & (keys != "")).unique().to_list()


def mark_input_seen(source: Source, column: str, store: DeltaStore, run_id: int) -> None:
    """Every key of today's input is seen, whatever became of its row: a row refused for
    a bad value today still names a record that must not be archived."""
    for keys in input_keys(source, column):
        store.mark_seen(keys, run_id)


def dry_run_plan(source: Source, column: str, store: DeltaStore) -> list[tuple[str, str]]:
    """`--dry-run --mirror`: (key, id) it would archive; the state is only read."""
    present: set[str] = set()
    for keys in input_keys(source, column):
        present.update(keys)
    return planned_archive(store, present)


def preview(spec: ImportSpec, source: Source, step: StepPlan, state: Path) -> str:
    """`--dry-run --mirror`: the listing of what the real run would archive (the state is
    only read; no state yet means a first load, which archives nothing)."""
    guard = MaxArchive.parse(spec.max_archive)
    column = key_source(step)
    if not state.exists() or column is None:
        return f"--mirror would archive nothing: no state at {state} yet (a first load)"
    store = DeltaStore(state)
    try:
        return render_plan(dry_run_plan(source, column, store), store.size(), guard)
    finally:
        store.close()
