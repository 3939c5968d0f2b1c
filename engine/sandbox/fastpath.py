"""Batch create column by column: the common all-valid batch, written and answered at once.

Most batch creates are plain: every input an object with a `properties` object of strings,
no inline associations, every value valid, no unique value taken. For those the work is done
per property across the inputs (one check of a column, one validator call per distinct
value) instead of per input x property, and the answer is encoded in one go.

Each `*_nowait` function either writes the whole batch and returns the encoded answer, or
returns None having changed nothing: the caller then runs the exact per-input path of
`objects.py`, which finds the errors. So an answer from here is byte for byte the answer the
per-input path would give for the same batch (timestamps aside); `tests/sandbox/
test_sandbox_fastpath.py` holds the two side by side.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Iterator
from functools import lru_cache, partial
from itertools import chain, repeat
from operator import attrgetter, is_not, itemgetter, methodcaller
from typing import Any

import msgspec
import orjson

from engine.sandbox.store import LeanRecord, ObjectStore, Record, now_ms
from engine.sandbox.validate import DIRECTORY_PROPERTIES, InvalidValue, iso_from_ms

_DICT = {dict}
_STR = {str}
_properties_of = itemgetter("properties")
_trace_of = itemgetter("objectWriteTraceId")
_get_trace = methodcaller("get", "objectWriteTraceId")
_get_associations = methodcaller("get", "associations")


class _Absent:
    """Marks an input that does not give a property (None is a JSON null)."""

    __slots__ = ()


_ABSENT = _Absent()
_is_given = partial(is_not, _ABSENT)


def plain_inputs(inputs: list[Any]) -> tuple[list[dict[str, Any]], list[Any]] | None:
    """The `properties` objects and trace ids of a batch whose inputs are all objects with a
    `properties` object and no inline associations; None for any other batch."""
    if not inputs or set(map(type, inputs)) != _DICT:
        return None
    try:
        props: list[dict[str, Any]] = list(map(_properties_of, inputs))
    except KeyError:
        return None
    if set(map(type, props)) != _DICT:
        return None
    sizes = set(map(len, inputs))
    if sizes == {1}:  # `properties` only
        return props, [None] * len(props)
    try:
        traces = list(map(_trace_of, inputs))
    except KeyError:
        traces = list(map(_get_trace, inputs))
    else:
        if sizes == {2}:  # `properties` and `objectWriteTraceId` only
            return props, traces
    if any(map(_get_associations, inputs)):
        return None
    return props, traces


def _columns(props: list[dict[str, Any]]) -> tuple[dict[str, list[Any]], bool]:
    """Property name -> its values across the inputs (`_ABSENT` where an input lacks it),
    and whether every input gives every property (then nothing is `_ABSENT`)."""
    first = list(props[0])
    if set(map(len, props)) == {len(first)}:  # the same names everywhere, or a KeyError
        if not first:
            return {}, True
        try:
            if len(first) == 1:
                return {first[0]: list(map(itemgetter(first[0]), props))}, True
            rows = list(map(itemgetter(*first), props))
        except KeyError:
            pass
        else:
            return dict(zip(first, map(list, zip(*rows, strict=True)), strict=True)), True
    names = dict.fromkeys(chain.from_iterable(props))
    return {name: list(map(methodcaller("get", name, _ABSENT), props)) for name in names}, False


def json_inner(texts: list[str]) -> list[str]:
    """Strings -> their JSON encodings without the quotes (the strings themselves when, as
    usual, nothing needs escaping: one `orjson.dumps` of the list tells)."""
    encoded = orjson.dumps(texts)
    if len(encoded) == sum(map(len, texts)) + 3 * len(texts) + (1 if texts else 2):
        return texts  # pure ASCII, nothing escaped: the JSON text is the string
    return [orjson.dumps(t).decode()[1:-1] for t in texts]


def _json_key(name: str) -> str:
    return orjson.dumps(name).decode()


def _index_nowait(index: dict[str, int], keys: list[str], ids: list[int]) -> bool:
    """Add keys -> ids to a unique index in one pass; if a key is taken (or given twice),
    take back what this call added and answer False."""
    held = list(map(index.setdefault, keys, ids))
    if held == ids:
        return True
    for key, holder, rid in zip(keys, held, ids, strict=True):
        if holder == rid:
            del index[key]
    return False


def _lowered(column: list[str]) -> list[str]:
    """The index keys of a column: lower case; the column itself when it already is (the
    index then shares the stored strings). One case fold of the joined column, not one per
    value, unless a value holds the separator."""
    joined = "\n".join(column)
    folded = joined.lower()
    if folded == joined:
        return column
    if joined.count("\n") != len(column) - 1:  # a value holds the separator
        return list(map(str.lower, column))
    return folded.split("\n")


def _unindex(added: list[tuple[dict[str, int], list[str]]]) -> None:
    for index, keys in added:
        for key in keys:
            del index[key]


# --- validated ------------------------------------------------------------------------


def create_nowait(store: ObjectStore, inputs: list[Any], started: int) -> bytes | None:
    """A validated batch create whose every input is valid, column by column; None (nothing
    written) for any batch the per-input path must look at."""
    plain = plain_inputs(inputs)
    if plain is None or store.portal.lean:
        return None
    props, traces = plain
    columns, uniform = _columns(props)
    if not DIRECTORY_PROPERTIES.isdisjoint(columns):  # owners, pipelines: checked per input
        return None
    n = len(props)
    validators, column_checks = store.validators, store.column_checks
    changed: dict[str, dict[str, str]] = {}  # name -> {given value: stored value} if not equal
    emptied: set[str] = set()  # names some input sets to "" (stored as nothing)
    full: set[str] = set()  # names every input gives a non-empty value
    for name, column in columns.items():
        check = validators.get(name)
        if check is None:
            return None
        given = column if uniform else list(filter(_is_given, column))
        if set(map(type, given)) != _STR:
            return None
        column_check = column_checks.get(name)
        if column_check is not None:
            if not column_check(given):
                return None
            mapping: dict[str, str] = {}
        else:
            try:
                mapping = {v: out for v in set(given) if (out := check(v, None)) != v}
            except InvalidValue:
                return None
        if mapping:
            changed[name] = mapping
        if "" in given or "" in mapping.values():
            emptied.add(name)
        elif len(given) == n:
            full.add(name)

    def stored_column(name: str) -> list[Any]:
        """What each input stores for `name`: its normalised value, or _ABSENT."""
        column = columns.get(name)
        if column is None:
            return [_ABSENT] * n
        mapping = changed.get(name)
        if mapping is None:
            return column
        return [mapping.get(v, v) if v is not _ABSENT else v for v in column]

    required = store.otype.required_any
    if required and full.isdisjoint(required):  # look input by input
        given_rows = zip(*(map(_is_set, stored_column(name)) for name in required), strict=True)
        if not all(map(any, given_rows)):
            return None
    portal = store.portal
    ids = portal.upcoming_ids(n)
    added: list[tuple[dict[str, int], list[str]]] = []
    for name, index in store.unique.items():
        if name not in columns:
            continue
        values = stored_column(name)
        if name in full:
            keys, holders = _lowered(values), ids
        else:
            rows = [i for i, v in enumerate(values) if v is not _ABSENT and v]
            keys, holders = [values[i].lower() for i in rows], [ids[i] for i in rows]
        if not _index_nowait(index, keys, holders):
            _unindex(added)
            return None
        added.append((index, keys))

    portal.take_ids(n)
    sids = list(map(str, ids))
    ms = now_ms()
    iso = iso_from_ms(ms)
    stored = list(map(dict, props))
    for name, mapping in changed.items():
        for p in stored:
            value = p.get(name)
            if value in mapping:
                p[name] = mapping[value]
    for name in emptied:
        for p in stored:
            if p.get(name) == "":
                del p[name]
    modified = store.otype.modified_property
    for p, sid in zip(stored, sids, strict=True):
        p["hs_object_id"] = sid
        p["createdate"] = iso
        p[modified] = iso
    store.records.update(zip(ids, map(Record, ids, stored, repeat(ms)), strict=True))
    store.order.extend(ids)

    if set(map(type, traces)) == _STR:
        results = [{"id": sid, "properties": p, "createdAt": iso, "updatedAt": iso,
                    "archived": False, "objectWriteTraceId": trace}
                   for sid, p, trace in zip(sids, stored, traces, strict=True)]
    else:  # some or all inputs without a trace id
        results = [{"id": sid, "properties": p, "createdAt": iso, "updatedAt": iso,
                    "archived": False} for sid, p in zip(sids, stored, strict=True)]
        for result, trace in zip(results, traces, strict=True):
            if isinstance(trace, str):
                result["objectWriteTraceId"] = trace
    return orjson.dumps({"status": "COMPLETE", "results": results,
                         "startedAt": iso_from_ms(started), "completedAt": iso_from_ms(now_ms())})


def _is_set(value: object) -> bool:
    return value is not _ABSENT and bool(value)


# --- lean -----------------------------------------------------------------------------


def create_lean_nowait(store: ObjectStore, inputs: list[Any], started: int) -> bytes | None:
    """The common lean batch, column by column: each unique property given (a non-empty
    string) by all inputs or none, no unique value taken. Writes and answers pre-encoded
    JSON; None (nothing written) sends the batch through the per-input path. Trace ids are
    echoed when every input has one (a string), as the per-input path does."""
    plain = plain_inputs(inputs)
    if plain is None:
        return None
    props, traces = plain

    def column_of(name: str) -> list[Any] | None:
        try:
            return list(map(itemgetter(name), props))
        except KeyError:  # some inputs lack it: fine only if none gives it
            return None if any(map(methodcaller("get", name), props)) else _SKIP

    return _lean_write(store, len(props), column_of, traces, started)


# Lean mode keeps ids and unique values only; decoding the whole request (every property of
# every input) was a quarter of its CPU. This decoder reads just the unique properties, the
# trace ids and whether an input has associations, skipping the rest of the text unbuilt.
# Anything it cannot type (a null or a number where a string is due, another shape) makes
# it give up, and the request is decoded whole and handled as before.


@lru_cache(maxsize=64)
def _lean_decoder(names: tuple[str, ...]) -> msgspec.json.Decoder[Any] | None:
    if not all(n.isidentifier() and not keyword.iskeyword(n) for n in names):
        return None
    unset: Any = msgspec.UNSET
    props = msgspec.defstruct("LeanProperties", [(n, str | msgspec.UnsetType, unset)
                                                 for n in names], gc=False)
    item = msgspec.defstruct("LeanInput", [
        ("properties", props),
        ("objectWriteTraceId", str | msgspec.UnsetType, unset),
        ("associations", msgspec.Raw | msgspec.UnsetType, unset)], gc=False)
    body = msgspec.defstruct("LeanBatch", [("inputs", list[item])], gc=False)  # type: ignore[valid-type]
    return msgspec.json.Decoder(body)


def create_lean_raw(store: ObjectStore, raw: bytes, started: int, limit: int) -> bytes | None:
    """`create_lean_nowait` straight from the request bytes; None: decode the request whole
    and take the usual way (nothing was written)."""
    decoder = _lean_decoder(tuple(store.unique))
    if decoder is None:
        return None
    try:
        inputs = decoder.decode(raw).inputs
    except msgspec.DecodeError:  # ValidationError included
        return None
    if not inputs or len(inputs) > limit:
        return None
    unset = msgspec.UNSET
    if any(item.associations is not unset for item in inputs):
        return None
    props = [item.properties for item in inputs]
    traces = [None if t is unset else t for t in map(attrgetter("objectWriteTraceId"), inputs)]

    def column_of(name: str) -> list[Any] | None:
        column = list(map(attrgetter(name), props))
        given = [v for v in column if v is not unset]
        if len(given) == len(column):
            return column
        return _SKIP if not any(given) else None

    return _lean_write(store, len(props), column_of, traces, started)


_SKIP: list[Any] = []  # column_of: no input gives this property


def _lean_write(store: ObjectStore, n: int, column_of: Callable[[str], list[Any] | None],
                traces: list[Any], started: int) -> bytes | None:
    """Write a plain lean batch of `n` inputs; `column_of(name)` is each unique property's
    values (None: decline the batch, `_SKIP`: no input gives it)."""
    portal = store.portal
    ids = portal.upcoming_ids(n)
    names: list[str] = []
    columns: list[list[str]] = []
    added: list[tuple[dict[str, int], list[str]]] = []
    for name, index in store.unique.items():
        column = column_of(name)
        if column is _SKIP:
            continue
        if column is None or set(map(type, column)) != _STR or not all(column):
            _unindex(added)
            return None
        keys = _lowered(column)
        if not _index_nowait(index, keys, ids):
            _unindex(added)
            return None
        added.append((index, keys))
        names.append(name)
        columns.append(column)

    portal.take_ids(n)
    ms = now_ms()
    records: Iterator[Record]
    if len(names) == 1:  # the usual lean batch: its dicts are made only if ever read
        records = map(LeanRecord, ids, repeat(names[0]), columns[0], repeat(ms))
    else:
        stored = ([{} for _ in ids] if not names else
                  [dict(zip(names, values, strict=True)) for values in zip(*columns,
                                                                           strict=True)])
        records = map(Record, ids, stored, repeat(ms))
    store.records.update(zip(ids, records, strict=True))
    store.order.extend(ids)

    # Each result is literal text around the id (twice), the unique values and the trace id:
    # one join over the interleaved pieces.
    iso = iso_from_ms(ms)
    sids = list(map(str, ids))
    pieces: list[Any] = [repeat(',{"id":"'), sids, repeat('","properties":{"hs_object_id":"'),
                         sids]
    for name, column in zip(names, columns, strict=True):
        pieces += [repeat(f'",{_json_key(name)}:"'), json_inner(column)]
    tail = (f'","createdate":"{iso}",{_json_key(store.otype.modified_property)}:"{iso}"}},'
            f'"createdAt":"{iso}","updatedAt":"{iso}","archived":false')
    if set(map(type, traces)) == _STR:
        pieces += [repeat(tail + ',"objectWriteTraceId":"'), json_inner(traces), repeat('"}')]
    else:
        pieces.append(repeat(tail + "}"))
    results = chain.from_iterable(zip(*pieces, strict=False))  # repeat() is endless
    next(results)  # the first result's leading comma goes with the head
    head = '{"status":"COMPLETE","results":[{"id":"'
    end = f'],"startedAt":"{iso_from_ms(started)}","completedAt":"{iso_from_ms(now_ms())}"}}'
    return "".join(chain((head,), results, (end,))).encode()
