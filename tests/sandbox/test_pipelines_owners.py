"""Owners and pipelines in the sandbox: the endpoints, their seeded data, and the validation
of owner, pipeline and stage values on records. Each test cites the guide it follows
(../shared/seeds/, ../shared/HUBSPOT_API.md)."""

from __future__ import annotations

import asyncio

import pytest
from hubspot import HubSpot

DEALS = "/crm/v3/objects/deals"
TICKETS = "/crm/v3/objects/tickets"
RENEWALS = "87123456"  # the seeded second deal pipeline


async def test_owners_are_listed_like_hubspot_and_paged(api):
    # 001 (propriétés): « votre valeur doit être l'élément id du propriétaire de
    # l'utilisateur, que vous pouvez trouver [...] via l'API des propriétaires ».
    reply = await api.get("/crm/v3/owners")
    assert reply.status == 200
    owners = reply.body["results"]
    assert len(owners) == 5 and "paging" not in reply.body
    first = owners[0]
    assert set(first) >= {"id", "email", "firstName", "lastName", "userId", "createdAt",
                          "updatedAt", "archived", "teams"}
    assert all(o["id"].isdigit() and 8 <= len(o["id"]) <= 9 for o in owners)
    names = [(o["firstName"], o["lastName"]) for o in owners]
    assert len(set(names)) == len(names) - 1  # two owners share a name

    seen, after, pages = [], None, 0
    while True:
        params = {"limit": "2", **({"after": after} if after else {})}
        page = (await api.get("/crm/v3/owners", params=params)).body
        seen += [o["id"] for o in page["results"]]
        pages += 1
        if "paging" not in page:
            break
        after = page["paging"]["next"]["after"]
    assert (seen, pages) == ([o["id"] for o in owners], 3)

    by_email = await api.get("/crm/v3/owners", params={"email": first["email"].upper()})
    assert [o["id"] for o in by_email.body["results"]] == [first["id"]]
    archived = await api.get("/crm/v3/owners", params={"archived": "true"})
    assert archived.body["results"] == []
    assert (await api.get("/crm/v3/owners", params={"limit": "501"})).status == 400

    one = await api.get(f"/crm/v3/owners/{first['id']}")
    assert one.status == 200 and one.body == first
    by_user = await api.get(f"/crm/v3/owners/{first['userId']}",
                            params={"idProperty": "userId"})
    assert by_user.body["id"] == first["id"]
    missing = await api.get("/crm/v3/owners/99999999")
    assert missing.status == 404 and missing.body["category"] == "OBJECT_NOT_FOUND"


async def test_deal_pipelines_and_stages(api):
    # 004: "In HubSpot, you can use pipelines to track records through stages in your
    # processes. [...] Using the pipelines API, you can [...] retrieve [...] pipelines and
    # pipeline stages."
    reply = await api.get("/crm/v3/pipelines/deals")
    assert reply.status == 200
    pipelines = {p["id"]: p for p in reply.body["results"]}
    default = pipelines["default"]
    assert default["label"] == "Sales Pipeline"
    assert [s["id"] for s in default["stages"]] == [
        "appointmentscheduled", "qualifiedtobuy", "presentationscheduled",
        "decisionmakerboughtin", "contractsent", "closedwon", "closedlost"]
    assert default["stages"][5]["label"] == "Closed Won"
    assert default["stages"][5]["metadata"]["probability"] == "1.0"
    renewals = pipelines[RENEWALS]
    labels = {s["label"]: s["id"] for s in renewals["stages"]}
    assert labels["Closed Won"].isdigit() and labels["Closed Lost"].isdigit()

    one = await api.get(f"/crm/v3/pipelines/deals/{RENEWALS}")
    assert one.body == renewals
    stages = await api.get(f"/crm/v3/pipelines/0-3/{RENEWALS}/stages")  # a type id too
    assert stages.body["results"] == renewals["stages"]
    missing = await api.get("/crm/v3/pipelines/deals/nope")
    assert missing.status == 404

    # 000: « Tickets : représente des demandes d'aide ou de support, suivies à travers les
    # statuts du pipeline ».
    tickets = (await api.get("/crm/v3/pipelines/tickets")).body["results"]
    assert [(p["id"], p["label"]) for p in tickets] == [("0", "Support Pipeline")]
    assert [(s["id"], s["label"]) for s in tickets[0]["stages"]] == [
        ("1", "New"), ("2", "Waiting on contact"), ("3", "Waiting on us"), ("4", "Closed")]


async def test_the_official_client_reads_owners_and_pipelines(sandbox):
    # HUBSPOT_API.md: the official client's generated models "deserialise HubSpot's real
    # response shapes, so a sandbox response they accept has the right shape".
    client = HubSpot(access_token=sandbox.token, host=sandbox.base_url)
    page = await asyncio.to_thread(client.crm.owners.owners_api.get_page, limit=2)
    assert len(page.results) == 2 and page.paging.next.after
    owner = await asyncio.to_thread(client.crm.owners.owners_api.get_by_id,
                                     int(page.results[0].id))
    assert owner.email == page.results[0].email
    pipelines = await asyncio.to_thread(client.crm.pipelines.pipelines_api.get_all, "deals")
    assert {p.id for p in pipelines.results} == {"default", RENEWALS}
    assert pipelines.results[0].stages[0].metadata["probability"] == "0.2"


async def test_pipeline_properties_have_external_options_and_owner_exists(api):
    # HUBSPOT_API.md: "Properties with `externalOptions: true` (e.g. deal stages, which live
    # in pipelines) list no options"; "Owner properties (`hubspot_owner_id`) take an owner id."
    for object_type, name in (("deals", "dealstage"), ("deals", "pipeline"),
                              ("tickets", "hs_pipeline"), ("tickets", "hs_pipeline_stage")):
        prop = (await api.get(f"/crm/v3/properties/{object_type}/{name}")).body
        assert (prop["externalOptions"], prop["options"]) == (True, [])
    for object_type in ("contacts", "companies", "deals", "tickets"):
        prop = (await api.get(f"/crm/v3/properties/{object_type}/hubspot_owner_id")).body
        assert (prop["type"], prop["externalOptions"]) == ("enumeration", True)


async def create(api, path, *props, traced=False):
    inputs = [{"properties": p, **({"objectWriteTraceId": f"t{i}"} if traced else {})}
              for i, p in enumerate(props)]
    return await api.post(f"{path}/batch/create", {"inputs": inputs})


def codes(body) -> list[tuple[str, str]]:
    return [(e["context"]["propertyName"][0], e["code"]) for e in body["errors"]]


async def test_a_deal_stage_must_be_in_the_deals_pipeline(api, sandbox):
    # 000: « Transactions : représente des opportunités de vente et des transactions, suivies
    # à travers les étapes du pipeline » — a stage belongs to one pipeline.
    ok = await create(api, DEALS, {"dealname": "a", "dealstage": "closedwon"},
                      {"dealname": "b", "pipeline": RENEWALS, "dealstage": "87123459"})
    assert ok.status == 201, ok.body
    # The stage of another pipeline, without a pipeline: checked against the default one.
    bad = await create(api, DEALS, {"dealname": "c", "dealstage": "87123459"})
    assert bad.status == 400 and bad.body["category"] == "VALIDATION_ERROR"
    assert codes(bad.body) == [("dealstage", "INVALID_OPTION")]
    assert "closedwon" in bad.body["errors"][0]["message"]
    wrong = await create(api, DEALS, {"dealname": "d", "pipeline": RENEWALS,
                                      "dealstage": "closedwon"})
    assert codes(wrong.body) == [("dealstage", "INVALID_OPTION")]
    unknown = await create(api, DEALS, {"dealname": "e", "pipeline": "Sales Pipeline"})
    assert codes(unknown.body) == [("pipeline", "INVALID_OPTION")]
    assert sorted(r["properties"]["dealname"] for r in sandbox.records("deals")) == ["a", "b"]


async def test_an_update_checks_the_stage_against_the_records_pipeline(api, sandbox):
    # 000 (as above): the record's own pipeline decides which stages it can take.
    created = await create(api, DEALS, {"dealname": "r", "pipeline": RENEWALS,
                                        "dealstage": "87123457"})
    deal_id = created.body["results"][0]["id"]
    moved = await api.patch(f"{DEALS}/{deal_id}", {"properties": {"dealstage": "87123458"}})
    assert moved.status == 200, moved.body
    refused = await api.post(f"{DEALS}/batch/update", {"inputs": [
        {"id": deal_id, "properties": {"dealstage": "closedwon"}}]})
    assert refused.status == 400
    assert codes(refused.body) == [("dealstage", "INVALID_OPTION")]
    both = await api.post(f"{DEALS}/batch/update", {"inputs": [
        {"id": deal_id, "properties": {"pipeline": "default", "dealstage": "closedwon"}}]})
    assert both.status == 200, both.body
    stored = sandbox.records("deals")[0]["properties"]
    assert (stored["pipeline"], stored["dealstage"]) == ("default", "closedwon")


async def test_traced_inputs_fail_alone_and_the_fast_path_does_not_skip_the_check(api, sandbox):
    # HUBSPOT_API.md: "batch create answers per input (207) only when each input carries a
    # unique `objectWriteTraceId`"; without it "one bad input fails the whole batch".
    plain = await create(api, DEALS, {"dealname": "x", "dealstage": "closedwon"},
                         {"dealname": "y", "dealstage": "Closed Won"})
    assert plain.status == 400 and sandbox.records("deals") == []
    traced = await create(api, DEALS, {"dealname": "x", "dealstage": "closedwon"},
                          {"dealname": "y", "dealstage": "Closed Won"}, traced=True)
    assert traced.status == 207
    assert traced.body["errors"][0]["context"]["objectWriteTraceId"] == ["t1"]
    assert [r["properties"]["dealname"] for r in sandbox.records("deals")] == ["x"]


async def test_ticket_status_must_be_in_the_tickets_pipeline(api, sandbox):
    # 000: « Tickets : représente des demandes d'aide ou de support, suivies à travers les
    # statuts du pipeline ».
    ok = await create(api, TICKETS, {"subject": "a", "hs_pipeline": "0",
                                     "hs_pipeline_stage": "2"},
                      {"subject": "b", "hs_pipeline_stage": "4"})
    assert ok.status == 201, ok.body
    bad = await create(api, TICKETS, {"subject": "c", "hs_pipeline_stage": "New"})
    assert codes(bad.body) == [("hs_pipeline_stage", "INVALID_OPTION")]
    unknown = await create(api, TICKETS, {"subject": "d", "hs_pipeline": "1"})
    assert codes(unknown.body) == [("hs_pipeline", "INVALID_OPTION")]
    assert len(sandbox.records("tickets")) == 2


@pytest.mark.parametrize("object_type", ["contacts", "companies", "deals", "tickets"])
async def test_an_owner_is_given_by_an_owner_id(api, sandbox, object_type):
    # 001: « votre valeur doit être l'élément id du propriétaire de l'utilisateur »
    # ({"hubspot_owner_id": "41629779"} in the guide's example).
    path = f"/crm/v3/objects/{object_type}"
    name = {"contacts": "email", "companies": "name", "deals": "dealname",
            "tickets": "subject"}[object_type]
    value = "a@example.com" if object_type == "contacts" else "A"
    ok = await create(api, path, {name: value, "hubspot_owner_id": "41629779"})
    assert ok.status == 201, ok.body
    for wrong in ("alice.martin@example.com", "12345678"):
        bad = await create(api, path, {name: value, "hubspot_owner_id": wrong})
        assert bad.status == 400
        assert codes(bad.body) == [("hubspot_owner_id", "INVALID_OWNER_ID")]
    assert [r["properties"]["hubspot_owner_id"] for r in sandbox.records(object_type)] == [
        "41629779"]
