"""Associations v4: labels, batch create/default/read/archive, symmetry, limits."""

from __future__ import annotations

from engine.sandbox import SandboxSettings, running_sandbox

V4 = "/crm/v4/associations"


async def _contacts_and_companies(api, n=2):
    contacts = await api.create_contacts(*({"email": f"c{i}@example.com"} for i in range(n)))
    reply = await api.post("/crm/v3/objects/companies/batch/create", {"inputs": [
        {"properties": {"domain": f"co{i}.com"}} for i in range(n)]})
    return contacts, [r["id"] for r in reply.body["results"]]


async def test_hubspot_defined_labels_are_listed_per_pair(api):
    reply = await api.get(f"{V4}/contacts/companies/labels")
    assert reply.status == 200
    specs = {(s["typeId"], s["label"]) for s in reply.body["results"]}
    assert {(1, "Primary"), (279, None)} <= specs
    back = await api.get(f"{V4}/0-2/0-1/labels")
    assert {(2, "Primary"), (280, None)} <= {(s["typeId"], s["label"])
                                            for s in back.body["results"]}


async def test_create_single_and_paired_labels(api):
    single = await api.post(f"{V4}/contacts/companies/labels",
                            {"name": "billing", "label": "Billing contact"})
    assert single.status == 200
    [spec] = single.body["results"]
    assert spec["category"] == "USER_DEFINED" and spec["label"] == "Billing contact"
    paired = await api.post(f"{V4}/deals/contacts/labels",
                            {"name": "manager_report", "label": "Manager",
                             "inverseLabel": "Report"})
    forward, back = paired.body["results"]
    assert forward["typeId"] != back["typeId"]
    assert (forward["label"], back["label"]) == ("Manager", "Report")
    listed = await api.get(f"{V4}/contacts/deals/labels")
    assert {"category": "USER_DEFINED", "typeId": back["typeId"], "label": "Report"} in (
        listed.body["results"])
    again = await api.post(f"{V4}/contacts/companies/labels",
                           {"name": "billing", "label": "Billing contact"})
    assert again.status == 400


async def test_batch_create_labeled_is_symmetric_idempotent_and_carries_unlabeled(api, sandbox):
    (c1, c2), (co1, co2) = await _contacts_and_companies(api)
    label = await api.post(f"{V4}/contacts/companies/labels",
                           {"name": "billing", "label": "Billing"})
    billing = label.body["results"][0]["typeId"]
    body = {"inputs": [
        {"from": {"id": c1}, "to": {"id": co1},
         "types": [{"associationCategory": "USER_DEFINED", "associationTypeId": billing}]},
        {"from": {"id": c2}, "to": {"id": co1},
         "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 1}]},
    ]}
    reply = await api.post(f"{V4}/contacts/companies/batch/create", body)
    assert reply.status == 201
    first = reply.body["results"][0]
    assert first["fromObjectTypeId"] == "0-1" and first["toObjectTypeId"] == "0-2"
    assert str(first["fromObjectId"]) == c1 and first["labels"] == ["Billing"]
    assert (await api.post(f"{V4}/contacts/companies/batch/create", body)).status == 201
    edges = sandbox.edges("contacts", "companies")
    assert {(e["fromId"], e["toId"], e["typeId"]) for e in edges} == {
        (c1, co1, billing), (c1, co1, 279), (c2, co1, 1), (c2, co1, 279)}
    read = await api.post(f"{V4}/companies/contacts/batch/read",
                          {"inputs": [{"id": co1}, {"id": co2}]})
    assert read.status == 207  # co2 has no contacts
    [result] = read.body["results"]
    assert result["from"] == {"id": co1}
    by_contact = {str(t["toObjectId"]): {a["typeId"] for a in t["associationTypes"]}
                  for t in result["to"]}
    assert by_contact[c2] == {2, 280}
    assert 280 in by_contact[c1] and len(by_contact[c1]) == 2
    assert read.body["errors"][0]["context"] == {"fromObjectId": [co2]}
    audit = sandbox.audit()["associations"]
    assert audit["contacts->companies"]["records_pairs"] == 2
    assert audit["companies->contacts"]["by_type"]["280"] == 2


async def test_unknown_ids_and_types_are_207_errors(api):
    (c1, _), (co1, _) = await _contacts_and_companies(api)
    reply = await api.post(f"{V4}/contacts/companies/batch/create", {"inputs": [
        {"from": {"id": c1}, "to": {"id": co1},
         "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]},
        {"from": {"id": "777777"}, "to": {"id": co1},
         "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]},
        {"from": {"id": c1}, "to": {"id": co1},
         "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}]},
    ]})
    assert reply.status == 207
    assert reply.body["numErrors"] == 2 and len(reply.body["results"]) == 1


async def test_default_associate_read_paging_and_archive(api, sandbox):
    contacts = await api.create_contacts(*({"firstname": f"n{i}"} for i in range(3)))
    deal = await api.post("/crm/v3/objects/deals", {"properties": {"dealname": "D"}})
    did = deal.body["id"]
    reply = await api.post(f"{V4}/deals/contacts/batch/associate/default", {"inputs": [
        {"from": {"id": did}, "to": {"id": c}} for c in contacts]})
    assert reply.status == 200
    assert reply.body["results"][0]["associationSpec"] == {
        "associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}
    read = await api.post(f"{V4}/contacts/deals/batch/read", {"inputs": [{"id": contacts[0]}]})
    assert read.body["results"][0]["to"][0]["associationTypes"][0]["typeId"] == 4
    archived = await api.post(f"{V4}/deals/contacts/batch/archive", {"inputs": [
        {"from": {"id": did}, "to": [{"id": contacts[0]}]}]})
    assert archived.status == 204
    assert {e["toId"] for e in sandbox.edges("deals", "contacts")} == set(contacts[1:])
    assert {e["fromId"] for e in sandbox.edges("contacts", "deals")} == set(contacts[1:])


async def test_labels_archive_keeps_the_unlabeled_type(api, sandbox):
    (c1, _), (co1, _) = await _contacts_and_companies(api)
    spec = [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 1}]
    await api.post(f"{V4}/contacts/companies/batch/create",
                   {"inputs": [{"from": {"id": c1}, "to": {"id": co1}, "types": spec}]})
    reply = await api.post(f"{V4}/contacts/companies/batch/labels/archive",
                           {"inputs": [{"from": {"id": c1}, "to": {"id": co1}, "types": spec}]})
    assert reply.status == 204
    assert [e["typeId"] for e in sandbox.edges("contacts", "companies")] == [279]
    assert [e["typeId"] for e in sandbox.edges("companies", "contacts")] == [280]


async def test_inline_associations_on_create(api, sandbox):
    company = await api.post("/crm/v3/objects/companies", {"properties": {"name": "Acme"}})
    coid = company.body["id"]
    reply = await api.post("/crm/v3/objects/contacts/batch/create", {"inputs": [
        {"properties": {"email": "x@example.com"},
         "associations": [{"to": {"id": coid}, "types": [
             {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]}]}]})
    assert reply.status == 201
    cid = reply.body["results"][0]["id"]
    assert sandbox.edges("companies", "contacts")[0]["fromId"] == coid
    got = await api.get(f"/crm/v3/objects/contacts/{cid}", params={"associations": "companies"})
    assert got.body["associations"]["companies"]["results"][0]["id"] == coid
    bad = await api.post("/crm/v3/objects/contacts/batch/create", {"inputs": [
        {"properties": {"email": "y@example.com"},
         "associations": [{"to": {"id": "999999"}, "types": [
             {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]}]}]})
    assert bad.status == 400


async def test_input_limit_is_a_setting():
    settings = SandboxSettings(rate_requests=None, association_batch_limit=5)
    async with running_sandbox(settings) as sandbox:
        import aiohttp

        inputs = [{"from": {"id": str(i)}, "to": {"id": str(i)}} for i in range(6)]
        async with aiohttp.ClientSession() as s, s.post(
            sandbox.base_url + f"{V4}/contacts/companies/batch/associate/default",
            json={"inputs": inputs}, headers={"Authorization": f"Bearer {sandbox.token}"},
        ) as resp:
            assert resp.status == 400
            assert "The limit is 5" in (await resp.json())["message"]
