"""Properties as HubSpot's guides (../shared/seeds/) describe them. Each test quotes the
sentence it follows."""

from __future__ import annotations

import pytest


def _unique_property(name: str) -> dict[str, object]:
    return {"name": name, "label": "External id", "type": "string", "fieldType": "text",
            "groupName": "information", "hasUniqueValue": True}


@pytest.mark.parametrize("object_type", ["products", "line_items", "notes"])
async def test_unique_value_properties_only_on_the_objects_the_guide_lists(api, object_type):
    # 004_71147b9edc873b5f.txt (Understanding the CRM APIs): "For contacts, companies, deals,
    # tickets, appointments, courses, listings, services, and custom objects, you can also
    # create custom unique identifier properties."
    refused = await api.post(f"/crm/v3/properties/{object_type}", _unique_property("ext_id"))
    assert refused.status == 400
    assert refused.body["category"] == "VALIDATION_ERROR"
    listed = await api.get(f"/crm/v3/properties/{object_type}")
    assert "ext_id" not in {p["name"] for p in listed.body["results"]}
    plain = await api.post(f"/crm/v3/properties/{object_type}",
                           {**_unique_property("ext_id"), "hasUniqueValue": False})
    assert plain.status == 201
    named = await api.post("/crm/v3/properties/deals", _unique_property("ext_id"))
    assert named.status == 201  # an object the sentence names

