"""Property definitions of a HubSpot object as plain frozen data, and the one call that reads them.

`normalize` and `mapping` import only the data types; `fetch_schema` takes the client as an
argument (anything with an async `get_json`), so this module imports no HTTP library.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.errors import ConfigError

# Object names <-> type ids (HUBSPOT_API.md, "Object type ids").
OBJECT_TYPE_IDS: Mapping[str, str] = {
    "contacts": "0-1",
    "companies": "0-2",
    "deals": "0-3",
    "tickets": "0-5",
    "products": "0-7",
    "line_items": "0-8",
    "quotes": "0-14",
    "communications": "0-18",
    "feedback_submissions": "0-19",
    "tasks": "0-27",
    "notes": "0-46",
    "meetings": "0-47",
    "calls": "0-48",
    "emails": "0-49",
    "invoices": "0-53",
    "marketing_events": "0-54",
    "subscriptions": "0-69",
    "payments": "0-101",
    "users": "0-115",
    "postal_mail": "0-116",
    "leads": "0-136",
    "services": "0-162",
    "courses": "0-410",
    "listings": "0-420",
    "appointments": "0-421",
}
_NAMES_BY_ID = {type_id: name for name, type_id in OBJECT_TYPE_IDS.items()}
_SINGULAR = {
    "contact": "contacts", "company": "companies", "deal": "deals", "ticket": "tickets",
    "product": "products", "line_item": "line_items", "quote": "quotes", "task": "tasks",
    "note": "notes", "meeting": "meetings", "call": "calls", "email": "emails",
    "invoice": "invoices", "payment": "payments", "lead": "leads", "user": "users",
}
_CUSTOM_ID = re.compile(r"^2-\d+$")

WRITABLE_TYPES = frozenset({"string", "number", "date", "datetime", "enumeration", "bool"})


@dataclass(frozen=True, slots=True)
class ObjectType:
    """A CRM object: `name` for standard objects (None for custom), `type_id` always."""

    name: str | None
    type_id: str

    @property
    def path_name(self) -> str:
        """What goes into a URL: the name where HubSpot accepts it, else the type id."""
        return self.name or self.type_id

    def __str__(self) -> str:
        return self.name or self.type_id


def canonical_object(text: str) -> ObjectType:
    """`contacts`, `Contact`, `0-1` -> ObjectType("contacts", "0-1"); `2-123` passes through."""
    key = text.strip().lower().replace("-", "_").replace(" ", "_")
    raw = text.strip()
    if raw in _NAMES_BY_ID:
        return ObjectType(_NAMES_BY_ID[raw], raw)
    if _CUSTOM_ID.match(raw):
        return ObjectType(None, raw)
    name = _SINGULAR.get(key, key)
    if name in OBJECT_TYPE_IDS:
        return ObjectType(name, OBJECT_TYPE_IDS[name])
    known = ", ".join(sorted(OBJECT_TYPE_IDS))
    raise ConfigError(f"unknown object type {text!r}: use one of {known}, a type id such as "
                      "0-1, or a custom object id 2-<n>")


@dataclass(frozen=True, slots=True)
class Option:
    value: str
    label: str
    hidden: bool = False


@dataclass(frozen=True, slots=True)
class Property:
    """One property of an object, as `GET /crm/v3/properties/{object}` describes it."""

    name: str
    label: str
    type: str
    field_type: str
    options: tuple[Option, ...] = ()
    unique: bool = False
    read_only: bool = False
    calculated: bool = False
    external_options: bool = False

    @property
    def is_writable(self) -> bool:
        return not (self.read_only or self.calculated) and self.type in WRITABLE_TYPES

    @property
    def is_multi(self) -> bool:
        """A multiple-checkbox enumeration (values joined by `;`)."""
        return self.type == "enumeration" and self.field_type == "checkbox"


@dataclass(frozen=True, slots=True)
class Schema:
    """The properties of one object type, looked up by name or by label."""

    object_type: ObjectType
    properties: tuple[Property, ...]
    _by_name: Mapping[str, Property] = field(init=False, repr=False, compare=False)
    _by_label: Mapping[str, tuple[Property, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_label: dict[str, list[Property]] = {}
        for prop in self.properties:
            by_label.setdefault(prop.label.strip().lower(), []).append(prop)
        object.__setattr__(self, "_by_name", {p.name: p for p in self.properties})
        object.__setattr__(self, "_by_label",
                           {key: tuple(props) for key, props in by_label.items()})

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> Property | None:
        return self._by_name.get(name)

    def by_label(self, label: str) -> tuple[Property, ...]:
        """Properties whose label equals `label`, ignoring case and outer spaces."""
        return self._by_label.get(label.strip().lower(), ())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    @property
    def unique_properties(self) -> tuple[Property, ...]:
        return tuple(p for p in self.properties if p.unique)


def _parse_property(item: Mapping[str, Any]) -> Property:
    meta = item.get("modificationMetadata") or {}
    options = tuple(
        Option(str(o.get("value", "")), str(o.get("label", o.get("value", ""))),
               bool(o.get("hidden", False)))
        for o in item.get("options") or ()
    )
    field_type = str(item.get("fieldType") or "")
    type_ = str(item.get("type") or "string")
    return Property(
        name=str(item["name"]),
        label=str(item.get("label") or item["name"]),
        type=type_,
        field_type=field_type,
        options=options,
        unique=bool(item.get("hasUniqueValue", False)),
        read_only=bool(meta.get("readOnlyValue", False)) or type_ in {"json",
                                                                       "object_coordinates"},
        calculated=bool(item.get("calculated", False)) or field_type == "calculation_equation",
        external_options=bool(item.get("externalOptions", False)),
    )


def parse_properties(body: Any, object_type: ObjectType | str = "contacts") -> Schema:
    """Build a `Schema` from the body of `GET /crm/v3/properties/{object}` (or its `results`)."""
    obj = object_type if isinstance(object_type, ObjectType) else canonical_object(object_type)
    results: Iterable[Any] = body.get("results", ()) if isinstance(body, Mapping) else body
    try:
        props = tuple(_parse_property(item) for item in results)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"the properties of {obj} are not in the expected shape: {exc!r}"
                          ) from None
    return Schema(obj, props)


class JsonGetter(Protocol):
    """The one client method `fetch_schema` needs."""

    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any: ...


async def fetch_schema(client: JsonGetter, object_type: ObjectType | str) -> Schema:
    """Read the property definitions of `object_type` once per run."""
    obj = object_type if isinstance(object_type, ObjectType) else canonical_object(object_type)
    body = await client.get_json(f"/crm/v3/properties/{obj.path_name}")
    return parse_properties(body, obj)
