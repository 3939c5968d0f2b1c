"""Associations v4 endpoints: labels, batch create / associate default / read / archive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.sandbox.associations import check_pair
from engine.sandbox.errors import ApiError, bad_request, batch_error, error_body
from engine.sandbox.objects import Answer, batch_answer, inputs_of
from engine.sandbox.store import ObjectStore, Portal, Record, now_ms

DEFAULT_WRITE_LIMIT = 2_000
READ_LIMIT = 1_000
READ_PAGE_SIZE = 500


def _inputs(body: object, limit: int) -> list[Any]:
    return inputs_of(body, limit, "Invalid input JSON: expected an object with `inputs`")


def _id_of(ref: object) -> str | None:
    if isinstance(ref, dict) and ref.get("id") is not None:
        return str(ref["id"])
    return None


def associable(frm: ObjectStore, to: ObjectStore) -> None:
    """400 for a pair of objects that cannot be associated."""
    try:
        check_pair(frm.type_id, to.type_id)
    except ValueError as exc:
        raise bad_request(str(exc)) from None


def list_labels(portal: Portal, frm: ObjectStore, to: ObjectStore) -> Answer:
    associable(frm, to)
    types = portal.associations.labels(frm.type_id, to.type_id)
    return 200, {"results": [t.spec() for t in sorted(types, key=lambda t: t.type_id)]}


def create_label(portal: Portal, frm: ObjectStore, to: ObjectStore, body: object) -> Answer:
    if not isinstance(body, dict) or not body.get("name") or not body.get("label"):
        raise bad_request("Invalid input JSON: a label needs `name` and `label`")
    associable(frm, to)
    inverse = body.get("inverseLabel")
    try:
        created = portal.associations.create_label(
            frm.type_id, to.type_id, str(body["name"]), str(body["label"]),
            str(inverse) if inverse else None,
        )
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    return 200, {"results": [t.spec() for t in created]}


def delete_label(portal: Portal, frm: ObjectStore, to: ObjectStore, type_id: str) -> Answer:
    try:
        tid = int(type_id)
    except ValueError:
        raise bad_request(f"{type_id} is not an association type id") from None
    if not portal.associations.archive_label(frm.type_id, to.type_id, tid):
        raise ApiError(404, error_body(f"No user-defined label {tid}", "OBJECT_NOT_FOUND"))
    return 204, None


def _missing_error(store: ObjectStore, record_id: str, side: str) -> dict[str, Any]:
    return batch_error(
        f"No {store.otype.singular} with id {record_id} exists.",
        "OBJECT_NOT_FOUND", context={side: [record_id]},
    )


class _Rejected(Exception):
    """One input of a batch write is answered with this per-input error (207)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.error = error


PairWrite = Callable[[Record, Record, object], dict[str, Any]]


def _pair_of(item: object, with_types: bool) -> tuple[str, str, object]:
    """An input's `from` id, `to` id and `types` (a list when `with_types`), else a 400."""
    fields = item if isinstance(item, dict) else {}
    from_id, to_id = _id_of(fields.get("from")), _id_of(fields.get("to"))
    types = fields.get("types")
    if with_types and (from_id is None or to_id is None or not isinstance(types, list)):
        raise bad_request("Invalid input JSON: each input needs `from`, `to` and `types`")
    if from_id is None or to_id is None:
        raise bad_request("Invalid input JSON: each input needs `from` and `to`")
    return from_id, to_id, types


def _write_pairs(frm: ObjectStore, to: ObjectStore, body: object, limit: int,
                 write: PairWrite, *, with_types: bool, ok: int) -> Answer:
    """Apply `write` to every (from, to) record pair; missing records are 207 errors."""
    started = now_ms()
    results: list[Any] = []
    errors: list[Any] = []
    for item in _inputs(body, limit):
        from_id, to_id, types = _pair_of(item, with_types)
        a, b = frm.get(from_id), to.get(to_id)
        try:
            if a is None:
                raise _Rejected(_missing_error(frm, from_id, "fromObjectId"))
            if b is None:
                raise _Rejected(_missing_error(to, to_id, "toObjectId"))
            results.append(write(a, b, types))
        except _Rejected as exc:
            errors.append(exc.error)
    return batch_answer(results, errors, ok, started)


def batch_create(portal: Portal, frm: ObjectStore, to: ObjectStore, body: object,
                 limit: int) -> Answer:
    associable(frm, to)
    assoc = portal.associations
    default = assoc.default_type(frm.type_id, to.type_id)

    def write(a: Record, b: Record, types: object) -> dict[str, Any]:
        type_ids = _type_ids(portal, frm, to, types)
        for tid in {*type_ids, default}:
            assoc.add(frm.type_id, a.id, to.type_id, b.id, tid)
        labels = sorted({assoc.types[t].label for t in assoc.targets(
            frm.type_id, to.type_id, a.id)[b.id]} - {None})  # type: ignore[type-var]
        return {
            "fromObjectTypeId": frm.type_id, "fromObjectId": a.id,
            "toObjectTypeId": to.type_id, "toObjectId": b.id, "labels": labels,
        }

    return _write_pairs(frm, to, body, limit, write, with_types=True, ok=201)


def _type_ids(portal: Portal, frm: ObjectStore, to: ObjectStore, types: object) -> list[int]:
    """The association type ids of one input, all valid from `frm` to `to`, else rejected."""
    assoc = portal.associations
    type_ids: list[int] = []
    bad = None
    for spec in types if isinstance(types, list) else []:
        tid = spec.get("associationTypeId") if isinstance(spec, dict) else None
        atype = assoc.types.get(tid) if isinstance(tid, int) else None
        if atype is None or (atype.from_type, atype.to_type) != (frm.type_id, to.type_id):
            bad = tid
            break
        type_ids.append(atype.type_id)
    if bad is not None or not type_ids:
        raise _Rejected(batch_error(
            f"{bad} is not a valid association type between {frm.otype.name} and "
            f"{to.otype.name}", "VALIDATION_ERROR",
            context={"associationTypeId": [str(bad)]},
        ))
    return type_ids


def batch_default(portal: Portal, frm: ObjectStore, to: ObjectStore, body: object,
                  limit: int) -> Answer:
    associable(frm, to)
    assoc = portal.associations
    default = assoc.default_type(frm.type_id, to.type_id)

    def write(a: Record, b: Record, types: object) -> dict[str, Any]:
        assoc.add(frm.type_id, a.id, to.type_id, b.id, default)
        return {
            "from": {"id": str(a.id)}, "to": {"id": str(b.id)},
            "associationSpec": {"associationCategory": "HUBSPOT_DEFINED",
                                "associationTypeId": default},
        }

    return _write_pairs(frm, to, body, limit, write, with_types=False, ok=200)


def batch_read(portal: Portal, frm: ObjectStore, to: ObjectStore, body: object) -> Answer:
    started = now_ms()
    associable(frm, to)
    inputs = _inputs(body, READ_LIMIT)
    assoc = portal.associations
    results: list[Any] = []
    errors: list[Any] = []
    for item in inputs:
        from_id = _id_of(item)
        if from_id is None:
            raise bad_request("Invalid input JSON: each input needs an `id`")
        rec = frm.get(from_id)
        targets = assoc.targets(frm.type_id, to.type_id, rec.id) if rec is not None else {}
        if not targets:
            errors.append(batch_error(
                f"No {to.otype.singular} is associated with {frm.otype.singular} {from_id}.",
                "OBJECT_NOT_FOUND", context={"fromObjectId": [from_id]},
                sub_category="crm.associations.NO_ASSOCIATIONS_FOUND",
            ))
            continue
        try:
            after = int(item.get("after") or 0)
        except (TypeError, ValueError):
            raise bad_request("after must be an opaque cursor from a previous page") from None
        ids = sorted(t for t in targets if t > after)
        page, rest = ids[:READ_PAGE_SIZE], ids[READ_PAGE_SIZE:]
        out: dict[str, Any] = {
            "from": {"id": from_id},
            "to": [
                {"toObjectId": to_id,
                 "associationTypes": [assoc.types[t].spec() for t in sorted(targets[to_id])]}
                for to_id in page
            ],
        }
        if rest:
            out["paging"] = {"next": {"after": str(page[-1]), "link": None}}
        results.append(out)
    return batch_answer(results, errors, 200, started)


def batch_archive(portal: Portal, frm: ObjectStore, to: ObjectStore, body: object,
                  limit: int) -> Answer:
    inputs = _inputs(body, limit)
    for item in inputs:
        from_id = _id_of(item.get("from")) if isinstance(item, dict) else None
        targets = item.get("to") if isinstance(item, dict) else None
        if from_id is None or not isinstance(targets, list):
            raise bad_request("Invalid input JSON: each input needs `from` and a `to` list")
        for ref in targets:
            to_id = _id_of(ref)
            if to_id is None:
                raise bad_request("Invalid input JSON: each `to` needs an `id`")
            try:
                portal.associations.remove(frm.type_id, int(from_id), to.type_id, int(to_id))
            except ValueError:
                continue
    return 204, None


def batch_archive_labels(portal: Portal, frm: ObjectStore, to: ObjectStore, body: object,
                         limit: int) -> Answer:
    inputs = _inputs(body, limit)
    for item in inputs:
        from_id, to_id, types = _pair_of(item, with_types=True)
        assert isinstance(types, list)
        tids = {s.get("associationTypeId") for s in types if isinstance(s, dict)}
        known = {t for t in tids if isinstance(t, int) and t in portal.associations.types}
        try:
            portal.associations.remove(frm.type_id, int(from_id), to.type_id, int(to_id), known)
        except ValueError:
            continue
    return 204, None
