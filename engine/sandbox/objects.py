"""Objects v3: batch create/read/update/upsert/archive, single records, list paging.

Batch rule (HUBSPOT_API.md): when every input carries an `objectWriteTraceId` the batch answers
per input (207, the valid inputs written); otherwise it is all-or-nothing (400 for the first
invalid input, 409 naming only the first clash, nothing written). Missing records in
update/read are reported as 207 errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from engine.sandbox import fastpath
from engine.sandbox.errors import (
    ApiError,
    bad_request,
    batch_error,
    error_body,
    invalid_values_details,
    invalid_values_message,
)
from engine.sandbox.store import InvalidInput, ObjectStore, Problem, Record, now_ms, unique_key
from engine.sandbox.validate import iso_from_ms

MAX_BATCH_INPUTS = 100
MAX_HISTORY_READ_INPUTS = 50
MAX_LIST_LIMIT = 100

Answer = tuple[int, Any]  # (HTTP status, JSON body, pre-encoded JSON bytes, or None)


def inputs_of(body: object, limit: int,
              invalid: str = "Invalid input JSON on line 1: expected an object with `inputs`",
              ) -> list[Any]:
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise bad_request(invalid)
    inputs: list[Any] = body["inputs"]
    if len(inputs) > limit:
        raise bad_request(
            f"Too many inputs: {len(inputs)}. The limit is {limit} inputs per batch."
        )
    return inputs


def is_traced(inputs: list[Any]) -> bool:
    """Per-input (207) answers only when every input carries an objectWriteTraceId."""
    return bool(inputs) and all(
        isinstance(i, dict) and isinstance(i.get("objectWriteTraceId"), str) for i in inputs
    )


def problem_item(problem: Problem, trace_id: str | None) -> dict[str, Any]:
    context: dict[str, list[str]] = {}
    if trace_id is not None:
        context["objectWriteTraceId"] = [trace_id]
    if problem.invalid:
        context["propertyName"] = [p.name for p in problem.invalid]
        return batch_error(
            invalid_values_message(problem.invalid), "VALIDATION_ERROR",
            context=context, errors=invalid_values_details(problem.invalid),
        )
    if problem.existing_id is not None:
        context["id"] = [problem.existing_id]
    return batch_error(problem.message, problem.category, context=context)


def batch_answer(results: list[Any], errors: list[Any], ok: int, started_ms: int) -> Answer:
    body: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": iso_from_ms(started_ms),
        "completedAt": iso_from_ms(now_ms()),
    }
    if errors:
        body["numErrors"] = len(errors)
        body["errors"] = errors
        return 207, body
    return ok, body


def _trace_of(item: object) -> str | None:
    if isinstance(item, dict):
        tid = item.get("objectWriteTraceId")
        if isinstance(tid, str):
            return tid
    return None


def _no_trace(item: object) -> str | None:
    return None


Plan = TypeVar("Plan")


class _ReportedMissing(InvalidInput):
    """A record a batch update names is missing: a per-input error even without trace ids."""


def plan_each(inputs: list[Any], traced: bool, plan: Callable[[Any], Plan],
              trace: Callable[[object], str | None] = _trace_of,
              ) -> tuple[list[tuple[Plan, str | None]], list[Any]]:
    """Plan every input in order; an invalid one fails the whole batch unless it is traced
    (then it becomes a per-input error of a 207 and the others are written)."""
    plans: list[tuple[Plan, str | None]] = []
    errors: list[Any] = []
    for item in inputs:
        trace_id = trace(item)
        try:
            plans.append((plan(item), trace_id))
        except InvalidInput as exc:
            if not traced and not isinstance(exc, _ReportedMissing):
                raise exc.problem.to_api_error() from None
            errors.append(problem_item(exc.problem, trace_id))
    return plans, errors


def answer_each(inputs: list[Any], traced: bool, plan: Callable[[Any], Plan],
                write: Callable[[Plan, int], dict[str, Any]], *, ok: int,
                started: int) -> Answer:
    """Plan every input, then write the planned ones (one timestamp) and answer."""
    plans, errors = plan_each(inputs, traced, plan)
    ms = now_ms()
    results = [traced_json(write(planned, ms), trace_id) for planned, trace_id in plans]
    return batch_answer(results, errors, ok, started)


def traced_json(out: dict[str, Any], trace_id: str | None) -> dict[str, Any]:
    if trace_id is not None:
        out["objectWriteTraceId"] = trace_id
    return out


def _not_object(message: str = "Invalid input JSON: each input must be an object") -> InvalidInput:
    return InvalidInput(Problem(400, "VALIDATION_ERROR", message))


def _missing(store: ObjectStore, record_id: object) -> InvalidInput:
    return InvalidInput(Problem(
        404, "OBJECT_NOT_FOUND",
        f"Could not find {store.otype.singular} with id {record_id}. "
        "Object not found.  objectId are usually numeric.",
    ))


def inline_associations(store: ObjectStore, raw: object) -> list[tuple[str, int, int]]:
    """`associations` on create -> [(to type id, to record id, association type id)]."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _not_object("Invalid input JSON: associations must be a list")
    portal = store.portal
    out: list[tuple[str, int, int]] = []
    for item in raw:
        to = item.get("to") if isinstance(item, dict) else None
        types = item.get("types") if isinstance(item, dict) else None
        if not isinstance(to, dict) or not isinstance(types, list) or not types:
            raise _not_object("Invalid input JSON: association needs `to` and `types`")
        for spec in types:
            tid = spec.get("associationTypeId") if isinstance(spec, dict) else None
            atype = portal.associations.types.get(tid) if isinstance(tid, int) else None
            if atype is None or atype.from_type != store.type_id:
                raise InvalidInput(Problem(
                    400, "VALIDATION_ERROR",
                    f"{tid} is not a valid association type id from {store.otype.name}",
                ))
            target = portal.stores[atype.to_type].get(str(to.get("id")))
            if target is None:
                raise InvalidInput(Problem(
                    400, "VALIDATION_ERROR",
                    f"One or more associations are invalid: "
                    f"{portal.stores[atype.to_type].otype.singular} {to.get('id')} not found",
                ))
            out.append((atype.to_type, target.id, atype.type_id))
    return out


def _link(store: ObjectStore, rec: Record, links: list[tuple[str, int, int]]) -> None:
    assoc = store.portal.associations
    for to_type, to_id, tid in links:
        assoc.add(store.type_id, rec.id, to_type, to_id, tid)
        default = assoc.default_type(store.type_id, to_type)
        if tid != default:
            assoc.add(store.type_id, rec.id, to_type, to_id, default)


def batch_create(store: ObjectStore, body: object) -> Answer:
    started = now_ms()
    inputs = inputs_of(body, MAX_BATCH_INPUTS)
    lean = store.portal.lean
    fast = (fastpath.create_lean_nowait if lean else fastpath.create_nowait)(
        store, inputs, started)
    if fast is not None:
        return 201, fast
    traced = is_traced(inputs)
    if lean and not any(isinstance(i, dict) and i.get("associations") for i in inputs):
        return lean_create_each(store, inputs, traced, started)
    return create_each(store, inputs, traced, started)


def batch_create_raw(store: ObjectStore, raw: bytes) -> Answer | None:
    """Lean mode's plain batch create from the request bytes, without decoding all of them;
    None: decode the request and call `batch_create`."""
    if not store.portal.lean:
        return None
    fast = fastpath.create_lean_raw(store, raw, now_ms(), MAX_BATCH_INPUTS)
    return None if fast is None else (201, fast)


def create_each(store: ObjectStore, inputs: list[Any], traced: bool, started: int) -> Answer:
    """Batch create input by input: the exact errors, 207 or all-or-nothing."""
    pending: dict[tuple[str, str], int] = {}

    def plan(item: object) -> tuple[dict[str, str], list[tuple[str, int, int]]]:
        if not isinstance(item, dict):
            raise _not_object()
        changes = store.prepare(item.get("properties", {}), None)
        store.check_required(changes)
        links = inline_associations(store, item.get("associations"))
        store.check_unique(changes, None, pending)
        return changes, links

    return answer_each(inputs, traced, plan,
                       lambda planned, ms: _insert_linked(store, *planned, ms),
                       ok=201, started=started)


def _insert_linked(store: ObjectStore, changes: dict[str, str],
                   links: list[tuple[str, int, int]], ms: int) -> dict[str, Any]:
    """Insert a record with its inline associations; its JSON with every property."""
    rec = store.insert(changes, ms)
    if links:
        _link(store, rec, links)
    return store.to_json(rec, all_props=True)


LeanPlan = tuple[dict[str, str], list[tuple[dict[str, int], str]]]


def lean_create_each(store: ObjectStore, inputs: list[Any], traced: bool,
                     started: int) -> Answer:
    """Lean batch create input by input: the exact errors (409 names the first clash)."""
    uniques = list(store.unique.items())
    pending: dict[tuple[str, str], int] = {}
    plans, errors = plan_each(inputs, traced,
                              lambda item: _lean_keys(store, uniques, pending, item),
                              trace=_trace_of if traced else _no_trace)
    ms = now_ms()
    iso = iso_from_ms(ms)
    modified = store.otype.modified_property
    results = []
    records, order, portal = store.records, store.order, store.portal
    for (keys, indexed), trace_id in plans:
        num = portal.next_id()
        records[num] = Record(num, keys, ms)
        order.append(num)
        for index, key in indexed:
            index[key] = num
        rid = str(num)
        out: dict[str, Any] = {
            "id": rid,
            "properties": {"hs_object_id": rid, **keys, "createdate": iso, modified: iso},
            "createdAt": iso,
            "updatedAt": iso,
            "archived": False,
        }
        results.append(traced_json(out, trace_id))
    return batch_answer(results, errors, 201, started)


def _lean_keys(store: ObjectStore, uniques: list[tuple[str, dict[str, int]]],
               pending: dict[tuple[str, str], int], item: object) -> LeanPlan:
    """The unique values of one lean create input, checked against the store and batch."""
    props = item.get("properties") if isinstance(item, dict) else None
    if not isinstance(props, dict):
        raise _not_object("Invalid input JSON: properties must be an object")
    keys: dict[str, str] = {}
    indexed: list[tuple[dict[str, int], str]] = []
    for name, index in uniques:
        value = props.get(name)
        if value:
            text = value if isinstance(value, str) else str(value)
            key = text.lower()
            holder = index.get(key)
            if holder is not None:
                raise InvalidInput(Problem(
                    409, "CONFLICT",
                    f"{store.otype.label} already exists. Existing ID: {holder}",
                    existing_id=str(holder),
                ))
            if (name, key) in pending:
                raise InvalidInput(Problem(
                    409, "CONFLICT",
                    f"Duplicate value {text!r} for unique property {name} "
                    "within the batch input",
                ))
            pending[(name, key)] = -1
            keys[name] = text
            indexed.append((index, key))
    return keys, indexed


def _reject_duplicate_ids(inputs: list[Any]) -> None:
    seen: set[tuple[str, str]] = set()
    dups: list[str] = []
    for item in inputs:
        if not isinstance(item, dict):
            continue
        id_prop = str(item.get("idProperty") or "hs_object_id")
        key = (id_prop, unique_key(str(item.get("id"))))
        if key in seen:
            dups.append(str(item.get("id")))
        seen.add(key)
    if dups:
        raise bad_request(
            f"Duplicate IDs found in batch input: [{', '.join(dups)}]. IDs must be unique"
        )


def _check_id_property(store: ObjectStore, id_prop: str | None) -> None:
    if id_prop and id_prop != "hs_object_id" and id_prop not in store.unique:
        if id_prop not in store.otype.properties:
            raise bad_request(f"Property {id_prop} does not exist")
        raise bad_request(
            f"Unable to perform update/upsert by non-unique {id_prop} property"
        )


def batch_update(store: ObjectStore, body: object) -> Answer:
    started = now_ms()
    inputs = inputs_of(body, MAX_BATCH_INPUTS)
    traced = is_traced(inputs)
    _reject_duplicate_ids(inputs)
    pending: dict[tuple[str, str], int] = {}

    def plan(item: object) -> tuple[Record, dict[str, str]]:
        if not isinstance(item, dict) or "id" not in item:
            raise _not_object("Invalid input JSON: each input needs an `id`")
        id_prop = item.get("idProperty")
        _check_id_property(store, id_prop)
        rec = store.get(str(item["id"]), id_prop)
        if rec is None:
            raise _ReportedMissing(_missing(store, item["id"]).problem)
        changes = store.prepare(item.get("properties", {}), rec)
        store.check_unique(changes, rec.id, pending)
        return rec, changes

    return answer_each(inputs, traced, plan,
                       lambda planned, ms: _write_update(store, *planned, ms),
                       ok=200, started=started)


def _write_update(store: ObjectStore, rec: Record, changes: dict[str, str],
                  ms: int) -> dict[str, Any]:
    store.apply(rec, changes, ms)
    return store.to_json(rec, all_props=True)


def batch_upsert(store: ObjectStore, body: object) -> Answer:
    started = now_ms()
    inputs = inputs_of(body, MAX_BATCH_INPUTS)
    traced = is_traced(inputs)
    for item in inputs:
        if isinstance(item, dict):
            _check_id_property(store, item.get("idProperty"))
    _reject_duplicate_ids(inputs)
    pending: dict[tuple[str, str], int] = {}

    def plan(item: object) -> tuple[Record | None, dict[str, str]]:
        if not isinstance(item, dict) or "id" not in item:
            raise _not_object("Invalid input JSON: each input needs an `id`")
        id_prop = item.get("idProperty") or "hs_object_id"
        rec = store.get(str(item["id"]), id_prop)
        raw = item.get("properties", {})
        if rec is not None:
            changes = store.prepare(raw, rec)
            store.check_unique(changes, rec.id, pending)
            return rec, changes
        if id_prop == "hs_object_id":
            raise _missing(store, item["id"])
        if isinstance(raw, dict):
            raw = {**raw, id_prop: str(item["id"])}
        changes = store.prepare(raw, None)
        store.check_required(changes)
        store.check_unique(changes, None, pending)
        return None, changes

    return answer_each(inputs, traced, plan,
                       lambda planned, ms: _write_upsert(store, *planned, ms),
                       ok=200, started=started)


def _write_upsert(store: ObjectStore, found: Record | None, changes: dict[str, str],
                  ms: int) -> dict[str, Any]:
    if found is None:
        rec = store.insert(changes, ms)
    else:
        rec = found
        store.apply(rec, changes, ms)
    out = store.to_json(rec, all_props=True)
    out["new"] = found is None
    return out


def _string_list(raw: object) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [p for p in raw.split(",") if p]
    if isinstance(raw, list):
        return [str(p) for p in raw]
    raise bad_request("Invalid input JSON: expected a list of property names")


def with_history(store: ObjectStore, rec: Record, out: dict[str, Any],
                 names: list[str]) -> None:
    history: dict[str, list[dict[str, str]]] = {}
    for name in names:
        value = rec.props.get(name)
        if value is not None:
            history[name] = [{
                "value": value,
                "timestamp": iso_from_ms(rec.updated_ms),
                "sourceType": "API",
                "sourceId": "sandbox",
            }]
    out["propertiesWithHistory"] = history


def batch_read(store: ObjectStore, body: object, archived: bool) -> Answer:
    started = now_ms()
    history = _string_list(body.get("propertiesWithHistory")) if isinstance(body, dict) else []
    inputs = inputs_of(body, MAX_HISTORY_READ_INPUTS if history else MAX_BATCH_INPUTS)
    assert isinstance(body, dict)
    properties = _string_list(body.get("properties"))
    id_prop = body.get("idProperty")
    if id_prop and id_prop != "hs_object_id" and id_prop not in store.unique:
        raise bad_request(f"{id_prop} is not a unique property of {store.otype.name}")
    results = []
    missing: list[str] = []
    seen: set[int] = set()
    for item in inputs:
        if not isinstance(item, dict) or "id" not in item:
            raise bad_request("Invalid input JSON: each input needs an `id`")
        rec = store.get(str(item["id"]), id_prop, archived)
        if rec is None:
            missing.append(str(item["id"]))
            continue
        if rec.id in seen:
            continue
        seen.add(rec.id)
        out = store.to_json(rec, properties)
        if history:
            with_history(store, rec, out, history)
        results.append(out)
    errors = []
    if missing:
        errors.append(batch_error(
            f"Could not get some {store.otype.singular.upper()} objects, they may be deleted "
            "or not exist. Check that ids are valid.",
            "OBJECT_NOT_FOUND", context={"ids": missing},
        ))
    return batch_answer(results, errors, 200, started)


def batch_archive(store: ObjectStore, body: object) -> Answer:
    inputs = inputs_of(body, MAX_BATCH_INPUTS)
    ms = now_ms()
    for item in inputs:
        if not isinstance(item, dict) or "id" not in item:
            raise bad_request("Invalid input JSON: each input needs an `id`")
        rec = store.get(str(item["id"]))
        if rec is not None:
            store.archive(rec, ms)
    return 204, None


# --- single records -------------------------------------------------------------------


def not_found_error(record_id: str) -> ApiError:
    return ApiError(404, error_body(
        "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND",
        context={"id": [record_id]},
    ))


def v3_associations(store: ObjectStore, rec: Record, to_names: list[str]) -> dict[str, Any]:
    """The `associations` block of a v3 record: {"companies": {"results": [{id, type}]}}."""
    portal = store.portal
    out: dict[str, Any] = {}
    for name in to_names:
        target = portal.store(name)
        links = portal.associations.targets(store.type_id, target.type_id, rec.id)
        if not links:
            continue
        results = []
        for to_id in sorted(links):
            for tid in sorted(links[to_id]):
                atype = portal.associations.types[tid]
                kind = f"{store.otype.singular}_to_{target.otype.singular}"
                if atype.label is None and any(
                    t.label == "Primary" for t in portal.associations.labels(
                        store.type_id, target.type_id)
                ):
                    kind += "_unlabeled"
                elif atype.category == "USER_DEFINED":
                    kind = atype.name or kind
                results.append({"id": str(to_id), "type": kind})
        out[name] = {"results": results}
    return out


def get_one(store: ObjectStore, record_id: str, query: dict[str, str]) -> Answer:
    archived = query.get("archived") == "true"
    rec = store.get(record_id, query.get("idProperty"), archived)
    if rec is None:
        raise not_found_error(record_id)
    out = store.to_json(rec, _string_list(query.get("properties")))
    assoc = _string_list(query.get("associations"))
    if assoc:
        out["associations"] = v3_associations(store, rec, assoc)
    return 200, out


def create_one(store: ObjectStore, body: object) -> Answer:
    if not isinstance(body, dict):
        raise bad_request("Invalid input JSON: expected an object")
    try:
        changes = store.prepare(body.get("properties", {}), None)
        store.check_required(changes)
        links = inline_associations(store, body.get("associations"))
        store.check_unique(changes, None)
    except InvalidInput as exc:
        raise exc.problem.to_api_error() from None
    return 201, _insert_linked(store, changes, links, now_ms())


def update_one(store: ObjectStore, record_id: str, query: dict[str, str], body: object) -> Answer:
    if not isinstance(body, dict):
        raise bad_request("Invalid input JSON: expected an object")
    id_prop = query.get("idProperty")
    _check_id_property(store, id_prop)
    rec = store.get(record_id, id_prop)
    if rec is None:
        raise not_found_error(record_id)
    try:
        changes = store.prepare(body.get("properties", {}), rec)
        store.check_unique(changes, rec.id)
    except InvalidInput as exc:
        raise exc.problem.to_api_error() from None
    store.apply(rec, changes, now_ms())
    return 200, store.to_json(rec, all_props=True)


def archive_one(store: ObjectStore, record_id: str) -> Answer:
    rec = store.get(record_id)
    if rec is not None:
        store.archive(rec, now_ms())
    return 204, None


def list_page(store: ObjectStore, query: dict[str, str], base_url: str, path: str) -> Answer:
    try:
        limit = int(query.get("limit", "10"))
        after = int(query.get("after") or 0)
    except ValueError:
        raise bad_request("limit and after must be integers") from None
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise bad_request(f"limit must be between 1 and {MAX_LIST_LIMIT}")
    archived = query.get("archived") == "true"
    properties = _string_list(query.get("properties"))
    assoc = _string_list(query.get("associations"))
    results: list[dict[str, Any]] = []
    more = False
    for rec in store.iter_after(after, archived):
        if len(results) == limit:
            more = True
            break
        out = store.to_json(rec, properties)
        if assoc:
            out["associations"] = v3_associations(store, rec, assoc)
        results.append(out)
    body: dict[str, Any] = {"results": results}
    if more:
        last = results[-1]["id"]
        body["paging"] = {"next": {"after": last, "link": f"{base_url}{path}?after={last}"}}
    return 200, body
