"""Reading HubSpot's answer to a batch write: status + body + batch -> outcome. Pure.

Bodies are decoded by typed msgspec structs that name only the fields read (ids, trace
ids, the `new` flag, errors); everything else HubSpot echoes (the properties of 100
records) is skipped by the decoder without being built. Only when a result cannot be
placed by its trace id are the echoed properties decoded, to place it by its key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from engine.batch import Batch
from engine.imports.plan import RECORD_ID, Mode
from engine.journal import Reject, Result


class ResultItem(msgspec.Struct):
    id: str
    objectWriteTraceId: str | None = None
    new: bool | None = None


class KeyedResultItem(ResultItem):
    """A result with the echoed properties, to place it by its key."""

    properties: dict[str, str | None] = {}


class ErrorContext(msgspec.Struct):
    objectWriteTraceId: list[str | int] = []
    ids: list[str | int] = []
    propertyName: list[str] = []


class ErrorItem(msgspec.Struct):
    status: str | int | None = None
    category: str | None = None
    message: str | None = None
    context: ErrorContext = msgspec.field(default_factory=ErrorContext)
    errors: list[dict[str, Any]] = []


class BatchAnswer(msgspec.Struct):
    results: list[ResultItem] = []
    errors: list[ErrorItem] = []


class KeyedBatchAnswer(msgspec.Struct):
    results: list[KeyedResultItem] = []
    errors: list[ErrorItem] = []


_ANSWER = msgspec.json.Decoder(BatchAnswer)
_KEYED_ANSWER = msgspec.json.Decoder(KeyedBatchAnswer)


@dataclass(frozen=True, slots=True)
class Keys:
    """How the rows of an answer are named: what `answers` needs of a `KeyPlan`."""

    column: str | None  # the key column (RECORD_ID: keys are record ids)
    prop: str  # the property the keys are values of ("" when none)
    object_name: str
    remember: bool  # keep key -> id in the journal's id map


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


@dataclass(slots=True)
class Answer:
    """The outcome of one answer, and what the sender still has to do."""

    sent: Sent
    conflicts: list[int] = field(default_factory=list)  # create positions HubSpot calls taken
    resend: list[int] = field(default_factory=list)  # positions neither answered nor refused


def decode(body: bytes) -> BatchAnswer | KeyedBatchAnswer:
    """The results and errors of a batch answer; an empty answer for an unreadable body."""
    try:
        return _ANSWER.decode(body) if body else BatchAnswer()
    except (msgspec.DecodeError, msgspec.ValidationError):
        return BatchAnswer()


def read_answer(status: int, body: bytes, batch: Batch, positions: Sequence[int],
                mode: Mode, keys: Keys) -> Answer:
    """Which inputs (`positions` of `batch`) were written, refused or left unanswered."""
    answer = decode(body)
    rows = batch.rows
    by_row = {rows[p]: p for p in positions}
    placed = _place_results(answer, body, batch, positions, by_row, mode, keys)
    out = Answer(Sent(results=placed.results, ids=placed.ids))
    taken = placed.positions
    by_key = _by_key(batch, positions) if answer.errors else {}
    for error in answer.errors:
        targets = _error_targets(error, by_row, by_key)
        status_of = _int(error.status)
        for position in targets:
            if position in taken:
                continue
            taken.add(position)
            if mode == "create" and (status_of == 409 or error.category == "CONFLICT"):
                out.conflicts.append(position)
            else:
                out.sent.rejects.append(reject_from(rows[position], status_of, error.category,
                                                    error.message, error.errors))
    missing = [p for p in positions if p not in taken]
    if missing and len(missing) < len(positions):
        out.resend = missing
    elif missing:
        out.sent.rejects += [Reject(rows[p], "", "NO_RESULT",
                                    f"HubSpot answered {status} without a result or an "
                                    "error for this row", None) for p in missing]
    return out


@dataclass(slots=True)
class _Placed:
    results: list[tuple[int, str, str]]
    ids: dict[tuple[str, str, str], str]
    positions: set[int]


def _place_results(answer: BatchAnswer | KeyedBatchAnswer, body: bytes, batch: Batch,
                   positions: Sequence[int], by_row: dict[int, int], mode: Mode,
                   keys: Keys) -> _Placed:
    """Each result at its input: by trace id, else (decoding the echo) by its key."""
    fixed = {"create": "created", "update": "updated"}.get(mode)
    remember = keys.remember and batch.keys is not None and keys.column != RECORD_ID
    fast = _all_traced(answer.results, by_row)
    if fast is not None:  # the usual answer: one result per input, each by its trace id
        answered = answer.results
        actions = ([fixed] * len(answered) if fixed else
                   ["created" if r.new else "updated" for r in answered])
        ids = [r.id for r in answered]
        placed = list(map(by_row.__getitem__, fast))
        learned: dict[tuple[str, str, str], str] = {}
        if remember:
            assert batch.keys is not None
            learned = {(keys.object_name, keys.prop, batch.keys[p]): rid
                       for p, rid in zip(placed, ids, strict=True)}
        return _Placed(list(zip(fast, ids, actions, strict=True)), learned, set(placed))
    items: Sequence[ResultItem] = answer.results
    traced = [_traced(r, by_row) for r in items]
    if None in traced and batch.keys is not None:  # untraced results: place by their key
        keyed = _keyed_results(body)
        if keyed is not None:
            by_key = _by_key(batch, positions)
            traced = [t if t is not None else _by_key_value(r, by_key, keys)
                      for t, r in zip(traced, keyed, strict=True)]
            items = keyed
    out = _Placed([], {}, set())
    for position, result in zip(traced, items, strict=True):
        if position is None or position in out.positions:
            continue
        out.positions.add(position)
        action = fixed or ("created" if result.new else "updated")
        out.results.append(Result(batch.rows[position], result.id, action))
        if remember:
            assert batch.keys is not None
            out.ids[(keys.object_name, keys.prop, batch.keys[position])] = result.id
    return out


def _all_traced(items: Sequence[ResultItem], by_row: dict[int, int]) -> list[int] | None:
    """The source rows of the results, when each names a distinct row of this send."""
    try:
        rows = [int(r.objectWriteTraceId) for r in items]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    distinct = set(rows)
    if len(distinct) != len(rows) or not distinct.issubset(by_row.keys()):
        return None
    return rows


def _traced(result: ResultItem, by_row: dict[int, int]) -> int | None:
    row = _int(result.objectWriteTraceId)
    return None if row is None else by_row.get(row)


def _keyed_results(body: bytes) -> list[KeyedResultItem] | None:
    try:
        return _KEYED_ANSWER.decode(body).results
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _by_key(batch: Batch, positions: Sequence[int]) -> dict[str, int]:
    if batch.keys is None:
        return {}
    return {batch.keys[p].lower(): p for p in positions}


def _by_key_value(result: KeyedResultItem, by_key: dict[str, int], keys: Keys) -> int | None:
    """Where a result without a usable trace id belongs: by record id or by key value."""
    if keys.column == RECORD_ID:
        return by_key.get(result.id)
    if keys.prop:
        value = result.properties.get(keys.prop)
        if value is not None:
            return by_key.get(value.lower())
    return None


def _error_targets(error: ErrorItem, by_row: dict[int, int],
                   by_key: dict[str, int]) -> list[int]:
    """The positions an error names: by trace id, else by the ids (keys) it lists."""
    traced = [by_row[r] for r in map(_int, error.context.objectWriteTraceId)
              if r is not None and r in by_row]
    if traced or not by_key:
        return traced
    return [by_key[k] for k in (str(i).lower() for i in error.context.ids) if k in by_key]


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def reject_from(row: int, status: int | None, category: Any, message: Any,
                errors: Any) -> Reject:
    """A row HubSpot refused, with the code and property of its first error."""
    code = str(category or status or "REJECTED")
    column = ""
    if isinstance(errors, list) and errors:
        first = errors[0] if isinstance(errors[0], dict) else {}
        code = str(first.get("code") or code)
        names = (first.get("context") or {}).get("propertyName") or []
        column = str(names[0]) if names else ""
    return Reject(row, column, code, str(message or f"HTTP {status}"), None)
