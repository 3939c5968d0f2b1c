"""Properties v3 and custom objects; audit duplicates, reset, lean mode."""

from __future__ import annotations

import aiohttp

from engine.sandbox import SandboxSettings, running_sandbox

PROPS = "/crm/v3/properties"


def _prop(name, **extra):
    return {"name": name, "label": name.title(), "type": "string", "fieldType": "text",
            "groupName": "contactinformation", **extra}


async def test_property_shape(api):
    reply = await api.get(f"{PROPS}/deals/dealstage")
    assert reply.status == 200
    body = reply.body
    assert body["externalOptions"] is True and body["options"] == []
    for key in ("name", "label", "type", "fieldType", "groupName", "description", "options",
                "hasUniqueValue", "calculated", "hidden", "hubspotDefined"):
        assert key in body
    assert set(body["modificationMetadata"]) == {"readOnlyValue", "readOnlyDefinition",
                                                 "archivable"}
    assert (await api.get(f"{PROPS}/deals/nope")).status == 404


async def test_property_create_rules(api):
    bad_field = await api.post(f"{PROPS}/contacts", _prop("x1", fieldType="number"))
    assert bad_field.status == 400
    enum = await api.post(f"{PROPS}/contacts", _prop(
        "tier", type="enumeration", fieldType="select",
        options=[{"label": "Gold", "value": "gold"}, {"label": "Silver", "value": "silver"}]))
    assert enum.status == 201
    rejected = await api.post("/crm/v3/objects/contacts", {
        "properties": {"email": "a@example.com", "tier": "Gold"}})
    assert rejected.body["errors"][0]["code"] == "INVALID_OPTION"
    for i in range(10):
        assert (await api.post(f"{PROPS}/contacts", _prop(f"u{i}", hasUniqueValue=True))
                ).status == 201
    eleventh = await api.post(f"{PROPS}/contacts", _prop("u10", hasUniqueValue=True))
    assert eleventh.status == 400


async def test_custom_unique_property_enforces_and_serves_as_id_property(api):
    await api.post(f"{PROPS}/deals", _prop("legacy_deal_id", hasUniqueValue=True,
                                           groupName="dealinformation"))
    first = await api.post("/crm/v3/objects/deals", {"properties": {"legacy_deal_id": "L1"}})
    clash = await api.post("/crm/v3/objects/deals", {"properties": {"legacy_deal_id": "L1"}})
    assert clash.status == 409
    assert clash.body["message"].endswith(f"Existing ID: {first.body['id']}")
    upsert = await api.post("/crm/v3/objects/deals/batch/upsert", {"inputs": [
        {"id": "L1", "idProperty": "legacy_deal_id", "properties": {"dealname": "x"}}]})
    assert upsert.body["results"][0]["new"] is False


async def test_custom_object_schema(api):
    reply = await api.post("/crm/v3/schemas", {
        "name": "car", "labels": {"singular": "Car", "plural": "Cars"},
        "primaryDisplayProperty": "vin", "requiredProperties": [],
        "properties": [{"name": "vin", "label": "VIN", "type": "string", "fieldType": "text",
                        "hasUniqueValue": True}],
        "associatedObjects": ["CONTACT"]})
    assert reply.status == 201
    type_id = reply.body["objectTypeId"]
    assert type_id.startswith("2-")
    listed = await api.get("/crm/v3/schemas")
    assert [s["objectTypeId"] for s in listed.body["results"]] == [type_id]
    created = await api.post(f"/crm/v3/objects/{type_id}/batch/create",
                             {"inputs": [{"properties": {"vin": "V1"}}]})
    assert created.status == 201
    again = await api.post("/crm/v3/objects/car", {"properties": {"vin": "v1"}})
    assert again.status == 409
    labels = await api.get(f"/crm/v4/associations/{type_id}/contacts/labels")
    assert labels.status == 200 and labels.body["results"]


async def test_audit_duplicates_by_configured_keys_and_reset(api, sandbox):
    await api.create_contacts({"firstname": "Same", "email": "a@example.com"},
                              {"firstname": "Same", "email": "b@example.com"},
                              {"firstname": "Other"})
    report = (await api.get("/__sandbox/audit", params={"keys": "contacts:firstname"})).body
    assert report["duplicates"]["contacts:firstname"]["values"] == 1
    assert report["duplicates"]["contacts:firstname"]["extra_records"] == 1
    assert report["duplicates"]["contacts:email"]["values"] == 0
    assert report["records"]["contacts"] == {"typeId": "0-1", "live": 3, "archived": 0}
    assert report["statuses"]["201"] == 1
    dump = (await api.get("/__sandbox/records/contacts")).body["results"]
    assert len(dump) == 3 and dump[0]["properties"]["firstname"] == "Same"
    await api.post(f"{PROPS}/contacts", _prop("keepme"))
    assert (await api.post("/__sandbox/reset")).status == 200
    assert sandbox.audit()["records"]["contacts"]["live"] == 0
    assert (await api.get(f"{PROPS}/contacts/keepme")).status == 200
    await api.post("/__sandbox/reset", {"keep_schemas": False})
    assert (await api.get(f"{PROPS}/contacts/keepme")).status == 404


async def test_lean_mode_keeps_ids_and_unique_keys_only():
    settings = SandboxSettings(rate_requests=None, lean=True)
    async with running_sandbox(settings) as sandbox, aiohttp.ClientSession() as s:
        headers = {"Authorization": f"Bearer {sandbox.token}"}
        url = sandbox.base_url + "/crm/v3/objects/contacts/batch/create"
        body = {"inputs": [{"properties": {"email": f"l{i}@example.com", "firstname": "F",
                                           "lifecyclestage": "not-validated"}}
                           for i in range(100)]}
        async with s.post(url, json=body, headers=headers) as resp:
            assert resp.status == 201
            results = (await resp.json())["results"]
        assert len(results) == 100 and results[0]["properties"]["email"] == "l0@example.com"
        assert sandbox.records("contacts")[0]["properties"] == {"email": "l0@example.com"}
        async with s.post(url, json={"inputs": [{"properties": {"email": "L0@example.com"}}]},
                          headers=headers) as resp:
            assert resp.status == 409
        async with s.post(url, data=b'{"inputs": [{"properties": {', headers=headers) as resp:
            assert resp.status == 400
            assert (await resp.json())["message"].startswith("Invalid input JSON")
        read = sandbox.base_url + "/crm/v3/objects/contacts/batch/read"
        async with s.post(read, json={"inputs": [{"id": "l5@example.com"}],
                                      "idProperty": "email"}, headers=headers) as resp:
            assert (await resp.json())["results"][0]["id"] == results[5]["id"]
