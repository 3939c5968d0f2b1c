"""Objects v3 as HubSpot documents them: shapes, batch semantics, value rules, error bodies."""

from __future__ import annotations

import json
import uuid

import pytest

BATCH = "/crm/v3/objects/contacts/batch"


def assert_error_body(body: dict, category: str) -> None:
    assert body["status"] == "error"
    assert body["category"] == category
    assert isinstance(body["message"], str) and body["message"]
    uuid.UUID(body["correlationId"])


async def test_unknown_token_gets_hubspot_401(api):
    reply = await api.get("/crm/v3/objects/contacts", token="pat-wrong")
    assert reply.status == 401
    assert_error_body(reply.body, "INVALID_AUTHENTICATION")


async def test_batch_create_answers_201_with_ids_ascending_and_timestamps(api):
    reply = await api.post(f"{BATCH}/create", {"inputs": [
        {"properties": {"email": "a@example.com", "firstname": "Ann"}},
        {"properties": {"email": "b@example.com", "lifecyclestage": "lead"}},
    ]})
    assert reply.status == 201
    body = reply.body
    assert body["status"] == "COMPLETE" and body["startedAt"] and body["completedAt"]
    ids = [r["id"] for r in body["results"]]
    assert all(isinstance(i, str) and i.isdigit() for i in ids)
    assert int(ids[0]) < int(ids[1])
    first = body["results"][0]
    assert first["properties"]["hs_object_id"] == first["id"]
    assert first["properties"]["createdate"].endswith("Z")
    assert first["properties"]["lastmodifieddate"] == first["properties"]["createdate"]
    assert first["archived"] is False and first["createdAt"] and first["updatedAt"]


async def test_batch_without_trace_ids_is_all_or_nothing_400(api, sandbox):
    reply = await api.post(f"{BATCH}/create", {"inputs": [
        {"properties": {"email": "ok@example.com"}},
        {"properties": {"email": "bad@example.com", "description": "x", "lifecyclestage": "x"}},
    ]})
    assert reply.status == 400
    assert_error_body(reply.body, "VALIDATION_ERROR")
    message = reply.body["message"]
    assert message.startswith("Property values were not valid: ")
    listed = json.loads(message.removeprefix("Property values were not valid: "))
    assert {"isValid": False, "message": 'Property "description" does not exist',
            "error": "PROPERTY_DOESNT_EXIST", "name": "description"} in listed
    assert {e["code"] for e in reply.body["errors"]} == {"PROPERTY_DOESNT_EXIST",
                                                         "INVALID_OPTION"}
    assert {"propertyName": ["description"]} in [e["context"] for e in reply.body["errors"]]
    assert sandbox.records("contacts") == []


async def test_batch_conflict_without_trace_ids_names_first_clash_and_writes_nothing(api, sandbox):
    [existing] = await api.create_contacts({"email": "taken@example.com"})
    await api.create_contacts({"email": "also@example.com"})
    reply = await api.post(f"{BATCH}/create", {"inputs": [
        {"properties": {"email": "new@example.com"}},
        {"properties": {"email": "TAKEN@example.com"}},
        {"properties": {"email": "also@example.com"}},
    ]})
    assert reply.status == 409
    assert_error_body(reply.body, "CONFLICT")
    assert reply.body["message"] == f"Contact already exists. Existing ID: {existing}"
    assert len(sandbox.records("contacts")) == 2


async def test_batch_with_trace_ids_answers_207_and_writes_the_valid_ones(api, sandbox):
    [existing] = await api.create_contacts({"email": "taken@example.com"})
    reply = await api.post(f"{BATCH}/create", {"inputs": [
        {"properties": {"email": "one@example.com"}, "objectWriteTraceId": "row-1"},
        {"properties": {"email": "taken@example.com"}, "objectWriteTraceId": "row-2"},
        {"properties": {"date_of_birth": "2020-01-01T10:00:00Z", "firstname": "x"},
         "objectWriteTraceId": "row-3"},
        {"properties": {"email": "four@example.com"}, "objectWriteTraceId": "row-4"},
    ]})
    assert reply.status == 207
    body = reply.body
    assert body["numErrors"] == 2
    assert [r["objectWriteTraceId"] for r in body["results"]] == ["row-1", "row-4"]
    by_trace = {e["context"]["objectWriteTraceId"][0]: e for e in body["errors"]}
    assert by_trace["row-2"]["category"] == "CONFLICT"
    assert by_trace["row-2"]["message"] == f"Contact already exists. Existing ID: {existing}"
    assert by_trace["row-3"]["category"] == "VALIDATION_ERROR"
    assert by_trace["row-3"]["errors"][0]["code"] == "INVALID_DATE"
    emails = sorted(r["properties"].get("email", "") for r in sandbox.records("contacts"))
    assert emails == ["four@example.com", "one@example.com", "taken@example.com"]


async def test_partial_trace_ids_are_still_all_or_nothing(api, sandbox):
    reply = await api.post(f"{BATCH}/create", {"inputs": [
        {"properties": {"email": "one@example.com"}, "objectWriteTraceId": "row-1"},
        {"properties": {"email": "not-an-email"}},
    ]})
    assert reply.status == 400
    assert reply.body["errors"][0]["code"] == "INVALID_EMAIL"
    assert sandbox.records("contacts") == []


async def test_duplicate_unique_value_within_one_batch_is_a_conflict(api, sandbox):
    reply = await api.post(f"{BATCH}/create", {"inputs": [
        {"properties": {"email": "same@example.com"}},
        {"properties": {"email": "same@example.com"}},
    ]})
    assert reply.status == 409
    assert sandbox.records("contacts") == []


async def test_more_than_100_inputs_is_400(api):
    inputs = [{"properties": {"firstname": f"n{i}"}} for i in range(101)]
    reply = await api.post(f"{BATCH}/create", {"inputs": inputs})
    assert reply.status == 400
    assert_error_body(reply.body, "VALIDATION_ERROR")


async def test_batch_read_by_id_and_id_property_with_missing_ids_is_207(api):
    ids = await api.create_contacts({"email": "a@example.com", "phone": "123"},
                                    {"email": "b@example.com"})
    reply = await api.post(f"{BATCH}/read", {
        "inputs": [{"id": ids[0]}, {"id": ids[1]}, {"id": "999999"}],
        "properties": ["phone"],
    })
    assert reply.status == 207
    assert [r["id"] for r in reply.body["results"]] == ids
    assert reply.body["results"][0]["properties"]["phone"] == "123"
    assert "phone" not in reply.body["results"][1]["properties"]
    assert reply.body["errors"][0]["category"] == "OBJECT_NOT_FOUND"
    assert reply.body["errors"][0]["context"] == {"ids": ["999999"]}
    reply = await api.post(f"{BATCH}/read", {
        "inputs": [{"id": "B@example.com"}], "idProperty": "email",
    })
    assert reply.status == 200
    assert [r["id"] for r in reply.body["results"]] == [ids[1]]


async def test_batch_update_by_id_and_email_clears_with_empty_string(api, sandbox):
    ids = await api.create_contacts({"email": "a@example.com", "phone": "1"})
    reply = await api.post(f"{BATCH}/update", {"inputs": [
        {"id": ids[0], "properties": {"phone": "", "firstname": "Ann"}},
    ]})
    assert reply.status == 200
    props = sandbox.records("contacts")[0]["properties"]
    assert "phone" not in props and props["firstname"] == "Ann"
    reply = await api.post(f"{BATCH}/update", {"inputs": [
        {"id": "a@example.com", "idProperty": "email", "properties": {"lastname": "B"}},
    ]})
    assert reply.status == 200
    assert reply.body["results"][0]["properties"]["lastname"] == "B"


async def test_batch_update_missing_ids_207_and_duplicates_400(api):
    ids = await api.create_contacts({"email": "a@example.com"})
    reply = await api.post(f"{BATCH}/update", {"inputs": [
        {"id": ids[0], "properties": {"firstname": "A"}},
        {"id": "424242", "properties": {"firstname": "B"}},
    ]})
    assert reply.status == 207
    assert reply.body["errors"][0]["category"] == "OBJECT_NOT_FOUND"
    reply = await api.post(f"{BATCH}/update", {"inputs": [
        {"id": ids[0], "properties": {"firstname": "A"}},
        {"id": ids[0], "properties": {"firstname": "B"}},
    ]})
    assert reply.status == 400
    assert "Duplicate IDs" in reply.body["message"]


async def test_upsert_reports_new_flags_and_is_idempotent(api, sandbox):
    [existing] = await api.create_contacts({"email": "old@example.com"})
    inputs = [
        {"id": "old@example.com", "idProperty": "email", "properties": {"firstname": "Old"}},
        {"id": "new@example.com", "idProperty": "email", "properties": {"firstname": "New"}},
    ]
    reply = await api.post(f"{BATCH}/upsert", {"inputs": inputs})
    assert reply.status == 200
    flags = {r["properties"]["email"]: (r["new"], r["id"]) for r in reply.body["results"]}
    assert flags["old@example.com"] == (False, existing)
    assert flags["new@example.com"][0] is True
    reply = await api.post(f"{BATCH}/upsert", {"inputs": inputs})
    assert [r["new"] for r in reply.body["results"]] == [False, False]
    assert len(sandbox.records("contacts")) == 2


async def test_upsert_by_non_unique_property_is_400(api):
    reply = await api.post(f"{BATCH}/upsert", {"inputs": [
        {"id": "Ann", "idProperty": "firstname", "properties": {"lastname": "x"}},
    ]})
    assert reply.status == 400
    assert reply.body["message"].startswith("Unable to perform update/upsert by non-unique")


async def test_upsert_with_trace_ids_answers_207(api):
    reply = await api.post(f"{BATCH}/upsert", {"inputs": [
        {"id": "x@example.com", "idProperty": "email", "properties": {"hs_email_optout": "yes"},
         "objectWriteTraceId": "t1"},
        {"id": "y@example.com", "idProperty": "email", "properties": {},
         "objectWriteTraceId": "t2"},
    ]})
    assert reply.status == 207
    assert reply.body["results"][0]["objectWriteTraceId"] == "t2"
    assert reply.body["errors"][0]["context"]["objectWriteTraceId"] == ["t1"]
    assert reply.body["errors"][0]["errors"][0]["code"] == "INVALID_BOOLEAN"


async def test_archive_then_list_archived(api, sandbox):
    ids = await api.create_contacts({"email": "a@example.com"}, {"email": "b@example.com"})
    reply = await api.post(f"{BATCH}/archive", {"inputs": [{"id": ids[0]}]})
    assert reply.status == 204 and reply.body is None
    live = await api.get("/crm/v3/objects/contacts")
    assert [r["id"] for r in live.body["results"]] == [ids[1]]
    gone = await api.get("/crm/v3/objects/contacts", params={"archived": "true"})
    assert [r["id"] for r in gone.body["results"]] == [ids[0]]
    assert gone.body["results"][0]["archived"] is True
    # the email is free again once archived
    assert await api.create_contacts({"email": "a@example.com"})


async def test_audit_counts_calls_and_inputs_per_route(api, sandbox):
    """Tests count what a run sent (e.g. write calls of a delta night) by route."""
    ids = await api.create_contacts({"email": "a@example.com"}, {"email": "b@example.com"})
    await api.post(f"{BATCH}/archive", {"inputs": [{"id": i} for i in ids]})
    await api.patch(f"/crm/v3/objects/contacts/{ids[0]}", {"properties": {"firstname": "x"}})
    calls = sandbox.audit()["calls"]
    assert calls[f"POST {BATCH}/create"] == {"calls": 1, "inputs": 2}
    assert calls[f"POST {BATCH}/archive"] == {"calls": 1, "inputs": 2}
    assert calls[f"PATCH /crm/v3/objects/contacts/{ids[0]}"]["calls"] == 1


async def test_single_record_endpoints(api):
    created = await api.post("/crm/v3/objects/companies", {
        "properties": {"domain": "acme.com", "name": "Acme", "numberofemployees": "12"}})
    assert created.status == 201
    cid = created.body["id"]
    got = await api.get(f"/crm/v3/objects/companies/{cid}",
                        params={"properties": "numberofemployees"})
    assert got.status == 200
    assert got.body["properties"]["numberofemployees"] == "12"
    assert got.body["properties"]["hs_object_id"] == cid
    by_domain = await api.get("/crm/v3/objects/companies/ACME.com",
                              params={"idProperty": "domain"})
    assert by_domain.body["id"] == cid
    patched = await api.patch(f"/crm/v3/objects/companies/{cid}",
                              {"properties": {"name": "Acme Inc"}})
    assert patched.status == 200
    assert patched.body["properties"]["name"] == "Acme Inc"
    assert patched.body["properties"]["hs_lastmodifieddate"] >= got.body["updatedAt"]
    missing = await api.get("/crm/v3/objects/companies/987654")
    assert missing.status == 404
    assert_error_body(missing.body, "OBJECT_NOT_FOUND")
    assert (await api.delete(f"/crm/v3/objects/companies/{cid}")).status == 204
    assert (await api.get(f"/crm/v3/objects/companies/{cid}")).status == 404
    dup = await api.post("/crm/v3/objects/companies", {"properties": {"domain": "x.com"}})
    again = await api.post("/crm/v3/objects/companies", {"properties": {"domain": "x.com"}})
    assert again.status == 409
    assert again.body["message"] == f"Company already exists. Existing ID: {dup.body['id']}"


async def test_list_pages_through_everything_once(api):
    ids = await api.create_contacts(*({"firstname": f"n{i}"} for i in range(25)))
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        params = {"limit": "10", **({"after": after} if after else {})}
        reply = await api.get("/crm/v3/objects/contacts", params=params)
        assert reply.status == 200
        seen += [r["id"] for r in reply.body["results"]]
        pages += 1
        if "paging" not in reply.body:
            break
        after = reply.body["paging"]["next"]["after"]
    assert seen == ids and pages == 3
    too_big = await api.get("/crm/v3/objects/contacts", params={"limit": "101"})
    assert too_big.status == 400


async def test_unknown_object_type_is_400_and_type_ids_work(api):
    assert (await api.get("/crm/v3/objects/unicorns")).status == 400
    reply = await api.post("/crm/v3/objects/0-3/batch/create", {"inputs": [
        {"properties": {"dealname": "D", "amount": "10.5", "dealstage": "appointmentscheduled",
                        "closedate": "1700000000000"}}]})
    assert reply.status == 201
    props = reply.body["results"][0]["properties"]
    assert props["closedate"] == "2023-11-14T22:13:20.000Z"
    assert "hs_lastmodifieddate" in props


CASES = [
    # (object, properties, expected error code or None, stored property check)
    ("contacts", {"email": "x@example.com", "lifecyclestage": "Lead"}, "INVALID_OPTION", None),
    ("contacts", {"email": "x@example.com", "lifecyclestage": "marketingqualifiedlead"}, None,
     ("lifecyclestage", "marketingqualifiedlead")),
    ("contacts", {"email": "x@example.com", "hs_email_optout": "True"}, "INVALID_BOOLEAN", None),
    ("contacts", {"email": "x@example.com", "hs_email_optout": "true"}, None,
     ("hs_email_optout", "true")),
    ("contacts", {"email": "x@example.com", "date_of_birth": "1700000000000"}, "INVALID_DATE",
     None),
    ("contacts", {"email": "x@example.com", "date_of_birth": "1699920000000"}, None,
     ("date_of_birth", "2023-11-14")),
    ("contacts", {"email": "x@example.com", "date_of_birth": "14/11/2023"}, "INVALID_DATE",
     None),
    ("contacts", {"email": "x@example.com", "hs_last_sales_activity_timestamp":
                  "2024-03-01T10:00:00+02:00"}, None,
     ("hs_last_sales_activity_timestamp", "2024-03-01T08:00:00.000Z")),
    ("contacts", {"email": "x@example.com", "hs_last_sales_activity_timestamp": "yesterday"},
     "INVALID_DATETIME", None),
    ("companies", {"name": "A", "numberofemployees": "twelve"}, "INVALID_INTEGER", None),
    ("contacts", {"email": "x@example.com", "message": "x" * 65_537}, "STRING_TOO_LONG", None),
    ("contacts", {"email": "x@example.com", "createdate": "2024-01-01"}, "READ_ONLY_VALUE",
     None),
    ("contacts", {"email": "x@example.com", "num_associated_deals": "3"}, "READ_ONLY_VALUE",
     None),
    ("contacts", {"email": "not an email"}, "INVALID_EMAIL", None),
    ("contacts", {"email": "x@example.com", "hs_buying_role": "CHAMPION;BLOCKER"}, None,
     ("hs_buying_role", "CHAMPION;BLOCKER")),
    ("contacts", {"email": "x@example.com", "hs_buying_role": "CHAMPION;nope"},
     "INVALID_OPTION", None),
    ("deals", {"dealname": "d", "dealstage": "closedwon"}, None, ("dealstage", "closedwon")),
    ("deals", {"dealname": "d", "dealstage": "any-stage-id"}, "INVALID_OPTION", None),
]


@pytest.mark.parametrize(("object_type", "props", "code", "stored"), CASES)
async def test_value_rules(api, sandbox, object_type, props, code, stored):
    reply = await api.post(f"/crm/v3/objects/{object_type}/batch/create",
                           {"inputs": [{"properties": props}]})
    if code is None:
        assert reply.status == 201, reply.body
        name, value = stored
        assert sandbox.records(object_type)[0]["properties"][name] == value
    else:
        assert reply.status == 400, reply.body
        assert [e["code"] for e in reply.body["errors"]] == [code]
        assert sandbox.records(object_type) == []


async def test_invalid_option_message_lists_allowed_values(api):
    reply = await api.post(f"{BATCH}/create", {"inputs": [
        {"properties": {"email": "x@example.com", "lifecyclestage": "Lead"}}]})
    msg = reply.body["errors"][0]["message"]
    assert msg.startswith("Lead was not one of the allowed options: [subscriber, lead,")


async def test_midnight_message_names_the_time(api):
    reply = await api.post(f"{BATCH}/create", {"inputs": [
        {"properties": {"email": "x@example.com", "date_of_birth": "1559326289103"}}]})
    assert reply.body["errors"][0]["message"] == (
        "1559326289103 is at 18:11:29.103 UTC, not midnight!")


async def test_multi_checkbox_leading_semicolon_appends(api, sandbox):
    [cid] = await api.create_contacts({"email": "x@example.com", "hs_buying_role": "CHAMPION"})
    reply = await api.patch(f"/crm/v3/objects/contacts/{cid}",
                            {"properties": {"hs_buying_role": ";BLOCKER;CHAMPION"}})
    assert reply.status == 200
    assert reply.body["properties"]["hs_buying_role"] == "CHAMPION;BLOCKER"


async def test_contacts_need_email_or_a_name(api):
    reply = await api.post(f"{BATCH}/create", {"inputs": [{"properties": {"phone": "1"}}]})
    assert reply.status == 400
    assert "email, firstname, lastname" in reply.body["message"]


async def test_a_list_url_past_hubspots_limit_gets_414_and_a_long_one_within_it_works(api):
    """HubSpot answers 414 to a list asking for hundreds of properties in its URL."""
    names = [f"custom_attribute_{n:04d}" for n in range(400)]  # ~9,600 characters
    reply = await api.get("/crm/v3/objects/contacts",
                          params={"limit": "10", "properties": ",".join(names)})
    assert reply.status == 414 and "Request-URI Too Large" in reply.body
    reply = await api.get("/crm/v3/objects/contacts",
                          params={"limit": "10", "properties": ",".join(names[:250])})
    assert reply.status == 200  # ~6,000 characters: unknown names are simply left out
