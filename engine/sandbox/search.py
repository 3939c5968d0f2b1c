"""CRM search v3: filter groups (OR of ANDs), sorts, offset paging capped at 10,000 results."""

from __future__ import annotations

import fnmatch
import re
import sys
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from typing import Any

from engine.sandbox.errors import bad_request
from engine.sandbox.objects import Answer
from engine.sandbox.store import ObjectStore, Record
from engine.sandbox.validate import parse_datetime_ms

MAX_RESULTS = 10_000
MAX_LIMIT = 200
MAX_GROUPS = 5
MAX_FILTERS_PER_GROUP = 10
MAX_FILTERS = 25

Predicate = Callable[[Record], bool]
_TOKEN = re.compile(r"[^\w@.*-]+")


def _key_function(store: ObjectStore, name: str) -> Callable[[str], Any]:
    """How values of a property compare: numbers and dates as numbers, the rest as text."""
    prop = store.otype.properties.get(name)
    kind = prop.type if prop is not None else "string"
    if name == "hs_object_id" or kind == "number":

        def number(text: str) -> float:
            try:
                return float(text)
            except ValueError:
                raise bad_request(f"{text} is not a valid number for {name}") from None

        return number
    if kind in ("datetime", "date"):

        def moment(text: str) -> float:
            ms = parse_datetime_ms(text)
            if ms is None:
                raise bad_request(f"{text} is not a valid date for {name}")
            return float(ms)

        return moment
    return str.lower


def _value_getter(store: ObjectStore, name: str) -> Callable[[Record], str | None]:
    if name == "hs_object_id":
        return lambda rec: str(rec.id)
    if store.portal.lean and name in ("createdate", store.otype.modified_property):
        from engine.sandbox.validate import iso_from_ms

        if name == "createdate":
            return lambda rec: iso_from_ms(rec.created_ms)
        return lambda rec: iso_from_ms(rec.updated_ms)
    return lambda rec: rec.props.get(name)


def _compile_filter(store: ObjectStore, raw: object) -> Predicate:
    if not isinstance(raw, dict) or not isinstance(raw.get("propertyName"), str):
        raise bad_request("Invalid filter: expected propertyName and operator")
    name: str = raw["propertyName"]
    op = str(raw.get("operator", "EQ")).upper()
    if name not in store.otype.properties and name != "hs_object_id":
        raise bad_request(f"There was a problem with the request. Property {name} does not exist")
    get = _value_getter(store, name)
    key = _key_function(store, name)

    def present(rec: Record) -> bool:
        return bool(get(rec))

    if op == "HAS_PROPERTY":
        return present
    if op == "NOT_HAS_PROPERTY":
        return lambda rec: not present(rec)

    def keyed(rec: Record) -> Any:
        value = get(rec)
        if not value:
            return None
        try:
            return key(value)
        except Exception:
            return None

    if op in ("IN", "NOT_IN"):
        values = raw.get("values")
        if not isinstance(values, list):
            raise bad_request(f"{op} needs `values`")
        wanted = {key(str(v)) for v in values}
        if op == "IN":
            return lambda rec: keyed(rec) in wanted
        return lambda rec: keyed(rec) not in wanted
    if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        pattern = str(raw.get("value", "")).lower()

        def contains(rec: Record) -> bool:
            value = get(rec)
            if not value:
                return False
            text = value.lower()
            tokens = [t for t in _TOKEN.split(text) if t]
            if "*" in pattern:
                return fnmatch.fnmatchcase(text, pattern) or any(
                    fnmatch.fnmatchcase(t, pattern) for t in tokens
                )
            return pattern == text or pattern in tokens

        if op == "CONTAINS_TOKEN":
            return contains
        return lambda rec: not contains(rec)
    if "value" not in raw:
        raise bad_request(f"{op} needs a `value`")
    target = key(str(raw["value"]))
    if op == "EQ":
        prop = store.otype.properties.get(name)
        if prop is not None and prop.is_multi:
            return lambda rec: target in {key(v) for v in (get(rec) or "").split(";") if v}
        return lambda rec: keyed(rec) == target
    if op == "NEQ":
        return lambda rec: keyed(rec) != target
    if op == "BETWEEN":
        if "highValue" not in raw:
            raise bad_request("BETWEEN needs `value` and `highValue`")
        high = key(str(raw["highValue"]))

        def between(rec: Record) -> bool:
            v = keyed(rec)
            return v is not None and bool(target <= v <= high)

        return between
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "LT": lambda a, b: a < b,
        "LTE": lambda a, b: a <= b,
        "GT": lambda a, b: a > b,
        "GTE": lambda a, b: a >= b,
    }
    if op not in compare:
        raise bad_request(f"Unknown operator {op}")
    cmp = compare[op]

    def ordered(rec: Record) -> bool:
        v = keyed(rec)
        return v is not None and cmp(v, target)

    return ordered


def _compile_groups(store: ObjectStore, groups: object) -> Predicate | None:
    if groups in (None, []):
        return None
    if not isinstance(groups, list) or len(groups) > MAX_GROUPS:
        raise bad_request(f"At most {MAX_GROUPS} filterGroups are allowed")
    compiled: list[list[Predicate]] = []
    total = 0
    for group in groups:
        filters = group.get("filters") if isinstance(group, dict) else None
        if not isinstance(filters, list) or len(filters) > MAX_FILTERS_PER_GROUP:
            raise bad_request(f"Each filterGroup takes at most {MAX_FILTERS_PER_GROUP} filters")
        total += len(filters)
        compiled.append([_compile_filter(store, f) for f in filters])
    if total > MAX_FILTERS:
        raise bad_request(f"At most {MAX_FILTERS} filters are allowed in total")
    return lambda rec: any(all(f(rec) for f in group) for group in compiled)


def _parse_sorts(raw: object) -> list[tuple[str, bool]]:
    """Sorts as strings (`"-createdate"`) or objects -> [(property, descending)]."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad_request("sorts must be a list")
    out = []
    for item in raw:
        if isinstance(item, str):
            out.append((item.lstrip("-"), item.startswith("-")))
        elif isinstance(item, dict) and isinstance(item.get("propertyName"), str):
            out.append((item["propertyName"],
                        str(item.get("direction", "ASCENDING")).upper().startswith("DESC")))
        else:
            raise bad_request("Invalid sort")
    return out


ID = "hs_object_id"
_BOUNDS = frozenset({"GT", "GTE", "LT", "LTE", "EQ", "BETWEEN"})


def _id_window(groups: object) -> tuple[int, int, list[Any]] | None:
    """(lowest id, highest id, other filters) of a single AND group bounding hs_object_id."""
    if not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0], dict):
        return None
    filters = groups[0].get("filters")
    if not isinstance(filters, list):
        return None
    lo, hi = 0, sys.maxsize
    rest: list[Any] = []
    for item in filters:
        if not (isinstance(item, dict) and item.get("propertyName") == ID
                and item.get("operator") in _BOUNDS):
            rest.append(item)
            continue
        try:
            value = int(str(item.get("value")))
            high = int(str(item.get("highValue"))) if item["operator"] == "BETWEEN" else 0
        except ValueError:
            return None
        operator = item["operator"]
        if operator in ("GT", "GTE", "EQ", "BETWEEN"):
            lo = max(lo, value + 1 if operator == "GT" else value)
        if operator in ("LT", "LTE", "EQ"):
            hi = min(hi, value - 1 if operator == "LT" else value)
        if operator == "BETWEEN":
            hi = min(hi, high)
    if (lo, hi) == (0, sys.maxsize):
        return None
    return lo, hi, rest


def search(store: ObjectStore, body: object) -> Answer:
    if not isinstance(body, dict):
        raise bad_request("Invalid input JSON: expected an object")
    try:
        limit = int(body.get("limit", 10))
        offset = int(body.get("after") or 0)
    except (TypeError, ValueError):
        raise bad_request("limit and after must be integers") from None
    if not 0 <= limit <= MAX_LIMIT:
        raise bad_request(f"limit must be between 0 and {MAX_LIMIT}")
    if offset + min(limit, 1) > MAX_RESULTS:
        raise bad_request(
            f"The search API returns at most {MAX_RESULTS} results per query; "
            f"paging past {MAX_RESULTS} is not supported (after={offset})."
        )
    groups = body.get("filterGroups")
    predicate = _compile_groups(store, groups)  # validates every filter, fast path or not
    sorts = _parse_sorts(body.get("sorts"))
    window = _id_window(groups)
    if window is not None:
        # An hs_object_id range (how exporters partition): bisect the ascending id list
        # instead of scanning every record, and test only the other filters.
        lo, hi, rest = window
        order = store.order
        ids = order[bisect_left(order, lo):bisect_right(order, hi)]
        others = _compile_groups(store, [{"filters": rest}]) if rest else None
        records = store.records
        matches = [r for r in (records[i] for i in ids)
                   if r.archived_ms is None and (others is None or others(r))]
        if sorts in ([], [(ID, False)]):
            sorts = []  # already ascending by id
    else:
        matches = [r for r in store.live() if predicate is None or predicate(r)]
    query = body.get("query")
    if isinstance(query, str) and query:
        needle = query.lower()
        matches = [r for r in matches
                   if any(needle in v.lower() for v in r.props.values())]
    for name, descending in reversed(sorts):
        get = _value_getter(store, name)
        key = _key_function(store, name)

        def sort_key(rec: Record, get: Any = get, key: Any = key) -> tuple[int, Any]:
            value = get(rec)
            if not value:
                return (1, 0)
            try:
                return (0, key(value))
            except Exception:
                return (1, 0)

        matches.sort(key=sort_key, reverse=descending)
    properties = body.get("properties")
    names = [str(p) for p in properties] if isinstance(properties, list) else []
    end = min(offset + limit, MAX_RESULTS)
    page = matches[offset:end]
    answer: dict[str, Any] = {
        "total": len(matches),
        "results": [store.to_json(r, names) for r in page],
    }
    if end < len(matches) and end < MAX_RESULTS:
        answer["paging"] = {"next": {"after": str(end)}}
    return 200, answer
