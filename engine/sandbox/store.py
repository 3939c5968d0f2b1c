"""Records of one portal: per-type stores with unique indexes, ids, and the association store.

`ObjectStore` does the single-record work (validate a change, check unique values, write);
the batch semantics (all-or-nothing vs 207) live in `objects.py`.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from engine.sandbox.associations import AssociationStore
from engine.sandbox.errors import ApiError, bad_request, conflict, not_found, validation_error
from engine.sandbox.pipelines import DIRECTORY
from engine.sandbox.schemas import ObjectType, PropertyDef, default_object_types
from engine.sandbox.validate import (
    MAX_STRING_CHARS,
    ColumnCheck,
    InvalidValue,
    Validator,
    check_directory,
    compile_column_check,
    compile_validator,
    iso_from_ms,
)

DEFAULT_PROPERTIES: dict[str, tuple[str, ...]] = {
    "0-1": ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"),
    "0-2": ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
    "0-3": ("amount", "closedate", "createdate", "dealname", "dealstage",
            "hs_lastmodifieddate", "hs_object_id", "pipeline"),
    "0-5": ("content", "createdate", "hs_lastmodifieddate", "hs_object_id", "hs_pipeline",
            "hs_pipeline_stage", "hs_ticket_category", "hs_ticket_priority", "subject"),
}
_STR_ONLY = frozenset({str})
_CHECKED_STRINGS = frozenset({"email"})  # strings with a format rule (contacts' email)


def now_ms() -> int:
    return int(time.time() * 1000)


class Record:
    """One record. `props` holds stored values only (`""` is never stored: it clears)."""

    __slots__ = ("archived_ms", "created_ms", "id", "props", "updated_ms")

    def __init__(self, record_id: int, props: dict[str, str], ms: int) -> None:
        self.id = record_id
        self.props = props
        self.created_ms = ms
        self.updated_ms = ms
        self.archived_ms: int | None = None


_PROPS = Record.__dict__["props"]  # the slot itself, under LeanRecord's property


class LeanRecord(Record):
    """A lean-mode record with one stored value, as the batch fast path writes millions of
    them: its `props` dict is made when first used (most are never read back)."""

    __slots__ = ("_name", "_value")

    def __init__(self, record_id: int, name: str, value: str, ms: int) -> None:
        self.id = record_id
        self.created_ms = self.updated_ms = ms
        self.archived_ms = None
        self._name = name
        self._value = value

    @property
    def props(self) -> dict[str, str]:
        try:
            props: dict[str, str] = _PROPS.__get__(self)
        except AttributeError:
            props = {self._name: self._value}
            _PROPS.__set__(self, props)
        return props

    @props.setter
    def props(self, value: dict[str, str]) -> None:
        _PROPS.__set__(self, value)


@dataclass(slots=True)
class Problem:
    """Why one batch input failed: an ApiError-like status, category and message."""

    status: int
    category: str
    message: str
    invalid: list[InvalidValue] | None = None
    existing_id: str | None = None

    def to_api_error(self) -> ApiError:
        if self.invalid:
            return validation_error(self.invalid)
        if self.status == 409:
            return conflict(self.message, self.existing_id)
        if self.status == 404:
            return not_found(self.message)
        return bad_request(self.message)


class ObjectStore:
    """Records of one object type, its unique indexes and compiled validators."""

    def __init__(self, otype: ObjectType, portal: Portal) -> None:
        self.otype = otype
        self.portal = portal
        self.records: dict[int, Record] = {}
        self.order: list[int] = []  # ascending ids, archived ones included
        self.unique: dict[str, dict[str, int]] = {}
        self.validators: dict[str, Validator] = {}
        self.column_checks: dict[str, ColumnCheck] = {}
        self.plain_text: frozenset[str] = frozenset()
        self.defaults: tuple[str, ...] = ()
        self.id_fields: tuple[str, ...] = ()
        self.refresh_schema()

    @property
    def type_id(self) -> str:
        return self.otype.type_id

    def refresh_schema(self) -> None:
        """Recompile validators (per value and per column) and unique indexes after a property
        change."""
        self.validators = {
            name: compile_validator(prop, self.otype.name)
            for name, prop in self.otype.properties.items()
        }
        self.column_checks = {
            name: check for name, prop in self.otype.properties.items()
            if (check := compile_column_check(prop, self.otype.name)) is not None
        }
        self.plain_text = frozenset(
            name for name, prop in self.otype.properties.items()
            if prop.type == "string" and prop.writable and name not in _CHECKED_STRINGS
        )
        for name in self.otype.unique_properties:
            if name not in self.unique:
                index: dict[str, int] = {}
                for rec in self.records.values():
                    value = rec.props.get(name)
                    if value and rec.archived_ms is None:
                        index[unique_key(value)] = rec.id
                self.unique[name] = index
        self.id_fields = ("createdate", "hs_object_id", self.otype.modified_property)
        self.defaults = DEFAULT_PROPERTIES.get(self.type_id, tuple(sorted(self.id_fields)))

    def add_property(self, prop: PropertyDef) -> None:
        self.otype.properties[prop.name] = prop
        self.refresh_schema()

    # --- lookups ----------------------------------------------------------------------

    def get(self, record_id: str, id_property: str | None = None, archived: bool = False
            ) -> Record | None:
        if id_property and id_property != "hs_object_id":
            index = self.unique.get(id_property)
            if index is None:
                raise bad_request(
                    f"Unable to perform update/upsert by non-unique {id_property} property"
                    if id_property in self.otype.properties
                    else f"Property {id_property} does not exist"
                )
            rid = index.get(unique_key(record_id))
            if rid is None:
                return None
        else:
            try:
                rid = int(record_id)
            except (TypeError, ValueError):
                return None
        rec = self.records.get(rid)
        if rec is None or (rec.archived_ms is not None) != archived:
            return None
        return rec

    def iter_after(self, after: int, archived: bool = False) -> Iterator[Record]:
        """Records with id > after, ascending."""
        order = self.order
        records = self.records
        for i in range(bisect_right(order, after), len(order)):
            rec = records[order[i]]
            if (rec.archived_ms is not None) == archived:
                yield rec

    def live(self) -> Iterator[Record]:
        return (r for r in self.records.values() if r.archived_ms is None)

    # --- changes ----------------------------------------------------------------------

    def prepare(self, raw: object, old: Record | None) -> dict[str, str]:
        """Validate a `properties` object -> normalised changes, or raise Problem-carrying error."""
        if not isinstance(raw, dict):
            raise InvalidInput(Problem(400, "VALIDATION_ERROR",
                                       "Invalid input JSON: properties must be an object"))
        if self.portal.lean:
            return self._prepare_lean(raw)
        validators = self.validators
        changes: dict[str, str] = dict(raw)
        problems: list[InvalidValue] | None = None
        old_props = old.props if old is not None else None
        values = raw.values()
        # Fast path: plain text properties given short strings need no per-value call.
        if set(map(type, values)) <= _STR_ONLY and max(map(len, values), default=0) <= (
            MAX_STRING_CHARS
        ):
            names: Iterable[str] = raw.keys() - self.plain_text
        else:
            names = list(raw)
        for name in names:
            value = raw[name]
            check = validators.get(name)
            try:
                if check is None:
                    raise InvalidValue(name, "PROPERTY_DOESNT_EXIST",
                                       f'Property "{name}" does not exist')
                changes[name] = check(value, old_props.get(name) if old_props else None)
            except InvalidValue as exc:
                if problems is None:
                    problems = []
                problems.append(exc)
        problems = check_directory(self.otype.name, changes, old_props, DIRECTORY, problems)
        if problems:
            raise InvalidInput(Problem(400, "VALIDATION_ERROR", "", invalid=problems))
        return changes

    def _prepare_lean(self, raw: dict[str, Any]) -> dict[str, str]:
        """Lean mode: no value rules, keep the unique keys only."""
        changes: dict[str, str] = {}
        for name in self.unique:
            value = raw.get(name)
            if value is not None:
                changes[name] = value if isinstance(value, str) else str(value)
        return changes

    def check_required(self, changes: dict[str, str]) -> None:
        required = self.otype.required_any
        if not required or self.portal.lean:
            return
        for name in required:
            if changes.get(name):
                return
        raise InvalidInput(Problem(
            400, "VALIDATION_ERROR",
            f"Error creating {self.otype.singular.upper()}. Some required properties "
            f"were not set. One of: {', '.join(required)} is required.",
        ))

    def check_unique(self, changes: dict[str, str], own_id: int | None,
                     pending: dict[tuple[str, str], int] | None = None) -> None:
        """409 if a unique value belongs to another record (or an earlier input of the batch)."""
        for name, index in self.unique.items():
            value = changes.get(name)
            if not value:
                continue
            key = unique_key(value)
            holder = index.get(key)
            if holder is not None and holder != own_id:
                raise InvalidInput(Problem(
                    409, "CONFLICT",
                    f"{self.otype.label} already exists. Existing ID: {holder}",
                    existing_id=str(holder),
                ))
            if pending is not None:
                earlier = pending.get((name, key))
                if earlier is not None and earlier != own_id:
                    raise InvalidInput(Problem(
                        409, "CONFLICT",
                        f"Duplicate value {value!r} for unique property {name} "
                        "within the batch input",
                    ))
                pending[(name, key)] = own_id if own_id is not None else -1

    def insert(self, changes: dict[str, str], ms: int) -> Record:
        rid = self.portal.next_id()
        iso = iso_from_ms(ms)
        props = {k: v for k, v in changes.items() if v} if "" in changes.values() else changes
        if not self.portal.lean:
            props["hs_object_id"] = str(rid)
            props["createdate"] = iso
            props[self.otype.modified_property] = iso
        rec = Record(rid, props, ms)
        self.records[rid] = rec
        self.order.append(rid)
        for name, index in self.unique.items():
            value = props.get(name)
            if value:
                index[unique_key(value)] = rid
        return rec

    def apply(self, rec: Record, changes: dict[str, str], ms: int) -> None:
        props = rec.props
        for name, index in self.unique.items():
            if name in changes:
                old = props.get(name)
                if old:
                    index.pop(unique_key(old), None)
                if changes[name]:
                    index[unique_key(changes[name])] = rec.id
        for name, value in changes.items():
            if value:
                props[name] = value
            else:
                props.pop(name, None)
        rec.updated_ms = ms
        if not self.portal.lean:
            props[self.otype.modified_property] = iso_from_ms(ms)

    def archive(self, rec: Record, ms: int) -> None:
        if rec.archived_ms is not None:
            return
        rec.archived_ms = ms
        for name, index in self.unique.items():
            value = rec.props.get(name)
            if value and index.get(unique_key(value)) == rec.id:
                del index[unique_key(value)]
        self.portal.associations.drop_object(self.type_id, rec.id)

    # --- output -----------------------------------------------------------------------

    def to_json(self, rec: Record, properties: list[str] | None = None,
                all_props: bool = False) -> dict[str, Any]:
        """A SimplePublicObject: all stored properties, or the defaults (without
        `properties`), or `properties` and the id fields; only properties with a value."""
        props = rec.props
        if all_props:
            out = dict(props)
        else:
            # The guides: a property without a value "n'apparaîtra pas dans la réponse";
            # `properties=` gives exactly those asked for, plus the record's id fields.
            names = (*self.id_fields, *properties) if properties else self.defaults
            out = {name: props[name] for name in names if name in props}
        if self.portal.lean:
            created = iso_from_ms(rec.created_ms)
            out["hs_object_id"] = str(rec.id)
            out["createdate"] = created
            out[self.otype.modified_property] = iso_from_ms(rec.updated_ms)
        body: dict[str, Any] = {
            "id": str(rec.id),
            "properties": out,
            "createdAt": iso_from_ms(rec.created_ms),
            "updatedAt": iso_from_ms(rec.updated_ms),
            "archived": rec.archived_ms is not None,
        }
        if rec.archived_ms is not None:
            body["archivedAt"] = iso_from_ms(rec.archived_ms)
        return body


class InvalidInput(Exception):
    """One batch input failed; carries the Problem."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def unique_key(value: str) -> str:
    """Unique values compare case-insensitively (emails, domains)."""
    return value.lower()


class Portal:
    """The whole CRM: object types by id and name, their stores, associations, ids."""

    def __init__(self, lean: bool = False) -> None:
        self.lean = lean
        self.stores: dict[str, ObjectStore] = {}
        self.aliases: dict[str, str] = {}
        self.associations = AssociationStore()
        self._next_record_id = 1
        self._next_custom = 1
        for otype in default_object_types():
            self.add_type(otype)

    def next_id(self) -> int:
        rid = self._next_record_id
        self._next_record_id = rid + 1
        return rid

    def upcoming_ids(self, count: int) -> list[int]:
        """The next `count` ids `next_id` will give, without taking them."""
        return list(range(self._next_record_id, self._next_record_id + count))

    def take_ids(self, count: int) -> None:
        """Take the next `count` ids at once (those `upcoming_ids` showed)."""
        self._next_record_id += count

    def add_type(self, otype: ObjectType) -> ObjectStore:
        store = ObjectStore(otype, self)
        self.stores[otype.type_id] = store
        self.aliases[otype.type_id] = otype.type_id
        self.aliases[otype.name.lower()] = otype.type_id
        self.aliases[otype.singular.lower()] = otype.type_id
        return store

    def allocate_custom_type_id(self) -> str:
        n = self._next_custom
        self._next_custom += 1
        return f"2-{1000 + n}"

    def store(self, name: str) -> ObjectStore:
        type_id = self.aliases.get(name.lower())
        if type_id is None:
            raise bad_request(f"Unable to infer object type from: {name}")
        return self.stores[type_id]

    def reset(self, keep_schemas: bool) -> None:
        """Drop all records and edges; keep (or also drop) custom properties and objects."""
        if not keep_schemas:
            self.__init__(self.lean)  # type: ignore[misc]
            return
        for store in self.stores.values():
            store.records.clear()
            store.order.clear()
            for index in store.unique.values():
                index.clear()
        self.associations.clear_edges()
