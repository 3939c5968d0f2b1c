"""Records as HubSpot's guides (../shared/seeds/) describe them: the properties a read
returns, and the date formats a write takes. Each test quotes the sentence it follows."""

from __future__ import annotations

import pytest

from engine.sandbox import fastpath, objects
from engine.sandbox.server import State
from engine.sandbox.settings import SandboxSettings

CONTACTS = "/crm/v3/objects/contacts"
ID_FIELDS = {"hs_object_id", "createdate", "lastmodifieddate"}


async def _contact(api) -> str:
    [cid] = await api.create_contacts({"email": "ann@example.com", "firstname": "Ann",
                                       "lastname": "Lee", "phone": "+1 555 0100"})
    return cid


async def _read_four_ways(api, cid: str, properties: list[str]) -> list[dict]:
    """The `properties` of one contact by single read, list, batch read and search."""
    query = {"properties": ",".join(properties)}
    single = await api.get(f"{CONTACTS}/{cid}", params=query)
    listed = await api.get(CONTACTS, params=query)
    batch = await api.post(f"{CONTACTS}/batch/read",
                           {"inputs": [{"id": cid}], "properties": properties})
    found = await api.post(f"{CONTACTS}/search", {"properties": properties, "filterGroups": [
        {"filters": [{"propertyName": "hs_object_id", "operator": "EQ", "value": cid}]}]})
    assert (single.status, listed.status, batch.status, found.status) == (200, 200, 200, 200)
    return [single.body["properties"], listed.body["results"][0]["properties"],
            batch.body["results"][0]["properties"], found.body["results"][0]["properties"]]


async def test_properties_returns_exactly_the_requested_ones_and_the_id_fields(api):
    # 002_77ca37dadb307433.txt (contacts): "properties | Une liste séparée par des virgules
    # des propriétés à renvoyer dans la réponse."
    cid = await _contact(api)
    for props in await _read_four_ways(api, cid, ["phone"]):
        assert set(props) == {"phone", *ID_FIELDS}, props
        assert props["phone"] == "+1 555 0100" and props["hs_object_id"] == cid


async def test_a_property_without_a_value_is_absent_from_the_response(api):
    # 002_77ca37dadb307433.txt (contacts): "Si le contact demandé n'a pas de valeur pour une
    # propriété, il n'apparaîtra pas dans la réponse."
    cid = await _contact(api)
    for props in await _read_four_ways(api, cid, ["phone", "city", "jobtitle"]):
        assert set(props) == {"phone", *ID_FIELDS}, props
    [bare] = await api.create_contacts({"email": "bare@example.com"})
    default = await api.get(f"{CONTACTS}/{bare}")
    assert set(default.body["properties"]) == {"email", *ID_FIELDS}
    assert None not in default.body["properties"].values()
    cleared = await api.patch(f"{CONTACTS}/{cid}", {"properties": {"phone": ""}})
    assert cleared.status == 200
    for props in await _read_four_ways(api, cid, ["phone"]):
        assert "phone" not in props


MIDNIGHT_ISO = ["2024-05-01T00:00:00Z", "2024-05-01T00:00:00.000Z", "2024-05-01T00:00:00+00:00",
                "2024-05-01T02:00:00+02:00"]


@pytest.mark.parametrize("value", MIDNIGHT_ISO)
async def test_date_properties_take_iso_8601_datetimes_at_midnight_utc(api, value):
    # 001_4f7aca2e676ea42c.txt (properties), type date: "Les valeurs doivent être
    # représentées au format UTC et peuvent être formatées sous forme de chaînes ISO 8601 ou
    # d'horodatages EPOCH en millisecondes (c.-à-d. minuit UTC)."
    reply = await api.post(f"{CONTACTS}/batch/create", {"inputs": [
        {"properties": {"email": "d@example.com", "date_of_birth": value}}]})
    assert reply.status == 201, reply.body
    assert reply.body["results"][0]["properties"]["date_of_birth"] == "2024-05-01"


async def test_a_date_not_at_midnight_utc_is_invalid_date(api, sandbox):
    # 001_4f7aca2e676ea42c.txt (properties): "Si vous utilisez le format d'horodatage UNIX,
    # vous devez utiliser un horodatage EPOCH en millisecondes (autrement dit, la valeur doit
    # être définie sur minuit UTC pour la date)."
    reply = await api.post(f"{CONTACTS}/batch/create", {"inputs": [
        {"properties": {"email": "d@example.com", "date_of_birth": "2024-05-01T18:31:29.103Z"}},
    ]})
    assert reply.status == 400
    [error] = reply.body["errors"]
    assert error["code"] == "INVALID_DATE"
    assert error["message"] == "2024-05-01T18:31:29.103Z is at 18:31:29.103 UTC, not midnight!"
    assert error["context"] == {"propertyName": ["date_of_birth"]}
    assert sandbox.records("contacts") == []


def test_fast_path_stores_iso_midnight_dates_as_the_per_input_path_does():
    fast, each = (State(SandboxSettings(rate_requests=None, search_rate_per_s=None))
                  for _ in range(2))
    inputs = [{"properties": {"email": f"p{n}@example.com", "date_of_birth": value}}
              for n, value in enumerate(MIDNIGHT_ISO)]
    fast_store, each_store = fast.portal.store("contacts"), each.portal.store("contacts")
    assert fastpath.create_nowait(fast_store, inputs, 0) is not None
    status, _ = objects.create_each(each_store, inputs, False, 0)
    assert status == 201
    stored = [[r.props["date_of_birth"] for r in s.records.values()]
              for s in (fast_store, each_store)]
    assert stored == [["2024-05-01"] * len(MIDNIGHT_ISO)] * 2
