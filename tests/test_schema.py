"""Property definitions, object names and the one properties call."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ConfigError
from engine.schema import ObjectType, Option, canonical_object, fetch_schema, parse_properties

CASES = Path(__file__).parent / "cases"
BODY = json.loads((CASES / "contacts_properties.json").read_text())


@pytest.mark.parametrize(("text", "expected"), [
    ("contacts", ObjectType("contacts", "0-1")),
    ("Contact", ObjectType("contacts", "0-1")),
    ("0-3", ObjectType("deals", "0-3")),
    ("line items", ObjectType("line_items", "0-8")),
    ("2-12345", ObjectType(None, "2-12345")),
])
def test_object_names_and_ids(text: str, expected: ObjectType) -> None:
    assert canonical_object(text) == expected


def test_unknown_object_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown object type 'widgets'"):
        canonical_object("widgets")


def test_parse_properties() -> None:
    schema = parse_properties(BODY, "contacts")
    stage = schema.get("lifecyclestage")
    assert stage is not None and stage.type == "enumeration" and stage.field_type == "radio"
    assert stage.options[2] == Option("marketingqualifiedlead", "Marketing Qualified Lead")
    assert [p.name for p in schema.by_label("  first NAME ")] == ["firstname"]
    assert [p.name for p in schema.unique_properties] == ["email"]
    created = schema.get("createdate")
    assert created is not None and created.read_only and not created.is_writable
    calc = schema.get("days_to_close")
    assert calc is not None and calc.calculated
    external = schema.get("hs_pipeline_stage")
    assert external is not None and external.external_options
    assert schema.get("interests") is not None and schema.get("interests").is_multi  # type: ignore[union-attr]


def test_malformed_body_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not in the expected shape"):
        parse_properties({"results": [{"label": "no name"}]})


class FakeClient:
    def __init__(self) -> None:
        self.paths: list[str] = []

    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        self.paths.append(path)
        return BODY


async def test_fetch_schema_calls_the_properties_endpoint() -> None:
    client = FakeClient()
    schema = await fetch_schema(client, "0-1")
    assert client.paths == ["/crm/v3/properties/contacts"]
    assert schema.object_type == ObjectType("contacts", "0-1")
    assert "email" in schema
    await fetch_schema(client, "2-99")
    assert client.paths[-1] == "/crm/v3/properties/2-99"
