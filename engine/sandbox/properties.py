"""Properties v3 (read, create with unique values) and custom object schemas (`/crm/v3/schemas`)."""

from __future__ import annotations

import re
from typing import Any

from engine.sandbox.associations import check_pair
from engine.sandbox.errors import ApiError, bad_request, error_body
from engine.sandbox.objects import Answer
from engine.sandbox.schemas import FIELD_TYPES, MAX_UNIQUE_PROPERTIES, ObjectType, PropertyDef
from engine.sandbox.store import ObjectStore, Portal

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def list_properties(store: ObjectStore) -> Answer:
    return 200, {"results": [p.to_json() for p in store.otype.properties.values()]}


def get_property(store: ObjectStore, name: str) -> Answer:
    prop = store.otype.properties.get(name)
    if prop is None:
        raise ApiError(404, error_body(
            f"Unable to find property {name} for object type {store.otype.name}",
            "OBJECT_NOT_FOUND",
        ))
    return 200, prop.to_json()


def property_from_json(body: object, existing: dict[str, PropertyDef]) -> PropertyDef:
    """Validate a property create request as HubSpot does -> the new definition."""
    if not isinstance(body, dict):
        raise bad_request("Invalid input JSON: expected an object")
    missing = [k for k in ("name", "label", "type", "fieldType", "groupName")
               if not isinstance(body.get(k), str) or not body.get(k)]
    if missing:
        raise bad_request(f"Missing required fields: {', '.join(missing)}")
    name, ptype, field_type = body["name"], body["type"], body["fieldType"]
    if not _NAME.match(name):
        raise bad_request(
            f"Property name {name!r} must start with a letter and contain only lowercase "
            "letters, digits and underscores"
        )
    if name in existing:
        raise ApiError(409, error_body(
            f"Property named '{name}' already exists.", "OBJECT_ALREADY_EXISTS",
            context={"name": [name]},
        ))
    allowed = FIELD_TYPES.get(ptype)
    if allowed is None:
        raise bad_request(f"{ptype} is not a valid property type")
    if field_type not in allowed:
        raise bad_request(
            f"fieldType {field_type} is not valid for type {ptype}; "
            f"use one of {sorted(allowed)}"
        )
    options: list[tuple[str, str]] = []
    raw_options = body.get("options") or []
    if not isinstance(raw_options, list):
        raise bad_request("options must be a list")
    for opt in raw_options:
        if not isinstance(opt, dict) or "value" not in opt or "label" not in opt:
            raise bad_request("each option needs a label and a value")
        options.append((str(opt["label"]), str(opt["value"])))
    if ptype == "bool" and not options:
        options = [("True", "true"), ("False", "false")]
    if ptype == "enumeration" and not options and not body.get("externalOptions"):
        raise bad_request(f"Enumeration property {name} needs options")
    unique = bool(body.get("hasUniqueValue"))
    if unique:
        if ptype != "string" and ptype != "number":
            raise bad_request("Only string and number properties can have unique values")
        if sum(1 for p in existing.values() if p.unique and not p.hubspot_defined) >= (
            MAX_UNIQUE_PROPERTIES
        ):
            raise bad_request(
                f"Unable to create property {name}: at most {MAX_UNIQUE_PROPERTIES} unique "
                "value properties per object"
            )
    calculated = field_type == "calculation_equation" or "calculationFormula" in body
    return PropertyDef(
        name=name, label=str(body["label"]), type=ptype, field_type=field_type,
        group_name=str(body["groupName"]), description=str(body.get("description") or ""),
        options=tuple(options), unique=unique, calculated=calculated,
        hidden=bool(body.get("hidden", False)), hubspot_defined=False,
        external_options=bool(body.get("externalOptions", False)),
        read_only_value=False, read_only_definition=False, archivable=True,
        display_order=int(body.get("displayOrder", -1)),
    )


# The CRM overview guide: "For contacts, companies, deals, tickets, appointments, courses,
# listings, services, and custom objects, you can also create custom unique identifier
# properties." (custom objects are 2-*)
UNIQUE_ALLOWED = frozenset({"0-1", "0-2", "0-3", "0-5", "0-421", "0-410", "0-420", "0-162"})


def create_property(store: ObjectStore, body: object) -> Answer:
    prop = property_from_json(body, store.otype.properties)
    if prop.unique and not (store.otype.custom or store.type_id in UNIQUE_ALLOWED):
        raise bad_request(
            f"Unable to create property {prop.name}: {store.otype.name} cannot have "
            "unique value properties"
        )
    store.add_property(prop)
    return 201, prop.to_json()


# --- custom objects ---------------------------------------------------------------------


def schema_json(store: ObjectStore) -> dict[str, Any]:
    otype = store.otype
    assoc = store.portal.associations
    return {
        "id": otype.type_id.split("-", 1)[1],
        "objectTypeId": otype.type_id,
        "fullyQualifiedName": f"p_{otype.name}",
        "name": otype.name,
        "labels": {"singular": otype.label, "plural": otype.name.capitalize()},
        "requiredProperties": list(otype.required_any),
        "searchableProperties": [],
        "secondaryDisplayProperties": [],
        "primaryDisplayProperty": next(
            (p.name for p in otype.properties.values() if not p.hubspot_defined), None
        ),
        "properties": [p.to_json() for p in otype.properties.values()],
        "associations": [
            {"id": str(tid), "fromObjectTypeId": frm, "toObjectTypeId": to,
             "name": f"{otype.name}_to_{to}"}
            for (frm, to), tid in assoc.defaults.items() if frm == otype.type_id
        ],
        "createdAt": "2024-01-01T00:00:00.000Z",
        "updatedAt": "2024-01-01T00:00:00.000Z",
        "archived": False,
    }


def list_schemas(portal: Portal) -> Answer:
    return 200, {"results": [schema_json(s) for s in portal.stores.values() if s.otype.custom]}


def get_schema(portal: Portal, name: str) -> Answer:
    return 200, schema_json(portal.store(name))


def create_schema(portal: Portal, body: object) -> Answer:
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise bad_request("Invalid input JSON: a schema needs a name")
    name = body["name"].lower()
    if name in portal.aliases:
        raise ApiError(409, error_body(
            f"Object type {name} already exists", "OBJECT_ALREADY_EXISTS"))
    labels = body.get("labels") or {}
    singular = str(labels.get("singular") or name) if isinstance(labels, dict) else name
    type_id = portal.allocate_custom_type_id()
    base = portal.stores["0-7"].otype.properties  # system properties of a simple object
    props = {k: v for k, v in base.items() if v.read_only_value}
    for raw in body.get("properties") or []:
        if isinstance(raw, dict):
            raw = {"groupName": f"{name}_information", **raw}
        prop = property_from_json(raw, props)
        props[prop.name] = prop
    required = tuple(str(p) for p in body.get("requiredProperties") or [])
    otype = ObjectType(type_id, name, singular.lower(), "hs_lastmodifieddate",
                       required, props, custom=True)
    store = portal.add_type(otype)
    portal.aliases[f"p_{name}"] = type_id
    for other in body.get("associatedObjects") or []:
        try:
            target = portal.store(str(other))
            check_pair(type_id, target.type_id)
        except (ApiError, ValueError):
            continue
        portal.associations.default_type(type_id, target.type_id)
    return 201, schema_json(store)
