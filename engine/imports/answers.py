"""Reading HubSpot's answer to a batch write: status + body + batch -> outcome. Pure.

Bodies are decoded by typed msgspec structs that name only the fields read (ids, trace
ids, the `new` flag, errors); everything else HubSpot echoes (the properties of 100
records) is skipped by the decoder without being built. Only when a result cannot be
placed by its trace id are the echoed properties decoded, to place it by its key.

A refused input becomes one reject per failing property, like a local reject: HubSpot's
code (`INVALID_EMAIL`, `INVALID_OPTION`...) and its inner message, read from the error's
`errors` details or from the JSON list inside a VALIDATION_ERROR message (`Property
values were not valid: [{"isValid":false,"message":...,"error":...,"name":...}]`), never
the raw JSON. `sourced` then names the source column mapped to the property and the value
that was sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

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


class TracedResultItem(msgspec.Struct, gc=False):
    """A result whose trace id is read as the source row it names (hsbulk sends
    `"objectWriteTraceId":"<row>"`), so the usual answer needs no `int()` per row. Not
    tracked by the garbage collector: it holds only strings and numbers."""

    id: str
    objectWriteTraceId: int | None = None
    new: bool | None = None


class TracedBatchAnswer(msgspec.Struct):
    results: list[TracedResultItem] = []
    errors: list[ErrorItem] = []


Decoded = BatchAnswer | KeyedBatchAnswer | TracedBatchAnswer

_ANSWER = msgspec.json.Decoder(BatchAnswer)
# Not strict: a numeric trace id, in a string or not, becomes an int; an answer holding
# any other trace id fails over to `_ANSWER`, which reads trace ids as text.
_TRACED_ANSWER = msgspec.json.Decoder(TracedBatchAnswer, strict=False)
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


def decode(body: bytes) -> Decoded:
    """The results and errors of a batch answer; an empty answer for an unreadable body."""
    if not body:
        return BatchAnswer()
    try:
        return _TRACED_ANSWER.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    try:
        return _ANSWER.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return BatchAnswer()


def read_answer(status: int, body: bytes, batch: Batch, positions: Sequence[int],
                mode: Mode, keys: Keys) -> Answer:
    """Which inputs (`positions` of `batch`) were written, refused or left unanswered."""
    answer = decode(body)
    rows = batch.rows
    if not answer.errors:
        whole = _answered_in_order(answer, batch, positions, mode, keys)
        if whole is not None:
            return Answer(whole)
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
                out.sent.rejects += rejects_from(rows[position], status_of, error.category,
                                                 error.message, error.errors,
                                                 error.context.propertyName)
    missing = [p for p in positions if p not in taken]
    if missing and len(missing) < len(positions):
        out.resend = missing
    elif missing:
        out.sent.rejects += [Reject(rows[p], "", "NO_RESULT",
                                    f"HubSpot answered {status} without a result or an "
                                    "error for this row", None) for p in missing]
    return out


def _answered_in_order(answer: Decoded, batch: Batch, positions: Sequence[int],
                       mode: Mode, keys: Keys) -> Sent | None:
    """The usual answer, read with no lookup per row: one result per input, in the order
    the inputs were sent, each naming its row by trace id. None for any other answer."""
    if not isinstance(answer, TracedBatchAnswer) or len(answer.results) != len(positions):
        return None
    results = answer.results
    rows = batch.rows
    sent = rows if len(positions) == len(rows) else [rows[p] for p in positions]
    if [r.objectWriteTraceId for r in results] != sent:
        return None
    ids = [r.id for r in results]
    fixed = _FIXED_ACTIONS.get(mode)
    actions = ([fixed] * len(ids) if fixed else
               ["created" if r.new else "updated" for r in results])
    learned: dict[tuple[str, str, str], str] = {}
    if keys.remember and batch.keys is not None and keys.column != RECORD_ID:
        names = batch.keys
        learned = {(keys.object_name, keys.prop, names[p]): rid
                   for p, rid in zip(positions, ids, strict=True)}
    return Sent(results=list(zip(sent, ids, actions, strict=True)), ids=learned)


_FIXED_ACTIONS = {"create": "created", "update": "updated"}


@dataclass(slots=True)
class _Placed:
    results: list[tuple[int, str, str]]
    ids: dict[tuple[str, str, str], str]
    positions: set[int]


def _place_results(answer: Decoded, body: bytes, batch: Batch,
                   positions: Sequence[int], by_row: dict[int, int], mode: Mode,
                   keys: Keys) -> _Placed:
    """Each result at its input: by trace id, else (decoding the echo) by its key."""
    fixed = _FIXED_ACTIONS.get(mode)
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
    items: Sequence[ResultItem | TracedResultItem] = answer.results
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


def _all_traced(items: Sequence[ResultItem | TracedResultItem],
                by_row: dict[int, int]) -> list[int] | None:
    """The source rows of the results, when each names a distinct row of this send."""
    try:
        rows = [int(r.objectWriteTraceId) for r in items]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    distinct = set(rows)
    if len(distinct) != len(rows) or not distinct.issubset(by_row.keys()):
        return None
    return rows


def _traced(result: ResultItem | TracedResultItem, by_row: dict[int, int]) -> int | None:
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
    """A row HubSpot refused, with the property, code and message of its first problem
    (every problem's message when there are several)."""
    found = rejects_from(row, status, category, message, errors)
    if len(found) == 1:
        return found[0]
    return found[0]._replace(message="; ".join(dict.fromkeys(r.message for r in found)))


def rejects_from(row: int, status: int | None, category: Any, message: Any, errors: Any,
                 properties: Sequence[str] = ()) -> list[Reject]:
    """A row HubSpot refused: one reject per failing property (see the module docstring);
    `properties`: the error's `context.propertyName`, for details that name none."""
    code = str(category or status or "REJECTED")
    text = str(message or f"HTTP {status}")
    found = [p for item in (errors if isinstance(errors, list) else ())
             if isinstance(item, dict) for p in _detail(item, code, text)]
    found = found or _listed(text) or [("", code, text)]
    if len(found) == 1 and not found[0][0] and len(properties) == 1:
        found = [(str(properties[0]), found[0][1], found[0][2])]
    return [Reject(row, prop, problem, why, None)
            for prop, problem, why in dict.fromkeys(found)]


Problem = tuple[str, str, str]  # property ("" when none), code, message


def _detail(item: dict[str, Any], code: str, text: str) -> list[Problem]:
    """One entry of an error's `errors`: `{"message","code","context":{"propertyName"}}`."""
    inner = str(item.get("message") or text)
    listed = _listed(inner)
    if listed:
        return listed
    context = item.get("context")
    names = context.get("propertyName") if isinstance(context, dict) else None
    prop = str(names[0]) if isinstance(names, list) and names else ""
    return [(prop, str(item.get("code") or code), inner)]


_LISTED_AFTER = ": ["


def _listed(message: str) -> list[Problem]:
    """The problems a message lists as JSON (`Property values were not valid: [...]`)."""
    at = message.find(_LISTED_AFTER)
    if at < 0:
        return []
    try:
        items = orjson.loads(message[at + len(_LISTED_AFTER) - 1:])
    except orjson.JSONDecodeError:
        return []
    if not isinstance(items, list):
        return []
    return [(str(i.get("name") or ""), str(i.get("error") or "VALIDATION_ERROR"),
             str(i.get("message") or message[:at])) for i in items if isinstance(i, dict)]


@dataclass(frozen=True, slots=True)
class SourceNames:
    """What a server reject names, as the user wrote it: the column mapped to a property."""

    columns: Mapping[str, str]  # property (or hs_object_id) -> its source column
    key_property: str  # the property (or hs_object_id) each batch key is a value of


_ABOUT_THE_KEY = frozenset({"OBJECT_NOT_FOUND", "NOT_FOUND"})  # the record was not found


def sourced(rejects: Sequence[Reject], batch: Batch, names: SourceNames) -> list[Reject]:
    """Server rejects of `batch` named like local ones: the source column mapped to the
    property and the value that was sent (rejects already naming a column are kept)."""
    at = {row: i for i, row in enumerate(batch.rows)}
    out = []
    for reject in rejects:
        prop = reject.column or (names.key_property if reject.code in _ABOUT_THE_KEY else "")
        column = names.columns.get(prop)
        position = at.get(reject.source_row)
        if column is None or position is None:
            out.append(reject)
            continue
        value = reject.value
        if value is None:
            value = _sent(batch, position, prop, names.key_property)
        out.append(reject._replace(column=column, value=value))
    return out


def _sent(batch: Batch, position: int, prop: str, key_property: str) -> str | None:
    """The value of `prop` the input at `position` carried."""
    if prop == key_property and batch.keys is not None:
        return batch.keys[position]
    try:
        value = orjson.loads(batch.inputs[position]).get("properties", {}).get(prop)
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return None if value is None else str(value)
