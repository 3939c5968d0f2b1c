"""Drift (`--verify-sample N`): HubSpot's rewrites are not drift; real edits are found,
reported and repaired, and nothing else is re-sent."""

from __future__ import annotations

import json

import pytest

from engine.api import Connection, open_client, start_sandbox
from engine.errors import ConfigError
from engine.imports.drift import DriftCheck, differences, is_same, sample_size
from engine.journal import DeltaStore, JournalThread
from engine.schema import Option, Property, Schema, canonical_object, fetch_schema

STRING = Property("firstname", "First name", "string", "text")
EMAIL = Property("email", "Email", "string", "text", unique=True)
NUMBER = Property("amount", "Amount", "number", "number")
DATE = Property("closedate", "Close date", "date", "date")
DATETIME = Property("seen_at", "Seen at", "datetime", "date")
BOOL = Property("vip", "VIP", "bool", "booleancheckbox")
MULTI = Property("tags", "Tags", "enumeration", "checkbox",
                 options=(Option("a", "A"), Option("b", "B"), Option("c", "C")))


@pytest.mark.parametrize(("prop", "stored", "read"), [
    (STRING, "Ada", " Ada "),  # trimmed
    (EMAIL, "Ada@Example.com", "ada@example.com"),  # lower-cased
    (NUMBER, "1500", "1500.0"),
    (NUMBER, "1.5e3", "1500"),
    (NUMBER, "0.50", ".5"),
    (DATE, "2024-03-05", "2024-03-05T00:00:00.000Z"),
    (DATE, "1709596800000", "2024-03-05"),  # --dates epoch-ms
    (DATETIME, "2024-03-05T10:00:00.000Z", "2024-03-05T10:00:00Z"),
    (DATETIME, "2024-03-05T10:00:00.000Z", "1709632800000"),
    (DATETIME, "2024-03-05T11:00:00+01:00", "2024-03-05T10:00:00.000Z"),
    (BOOL, "true", "TRUE"),
    (MULTI, "a;b", "b;a"),
    (MULTI, ";c", "a;b;c"),  # --checkbox append: c among the values
    (STRING, "", None),  # --empty clear: cleared
])
def test_values_hubspot_rewrites_are_not_drift(prop, stored, read):
    assert is_same(stored, read, prop)


@pytest.mark.parametrize(("prop", "stored", "read"), [
    (STRING, "Ada", "Grace"),
    (STRING, "Ada", "ada"),  # case matters in a plain string
    (STRING, "Ada", None),  # cleared in HubSpot
    (EMAIL, "ada@example.com", "grace@example.com"),
    (NUMBER, "1500", "1501"),
    (DATE, "2024-03-05", "2024-03-06"),
    (DATETIME, "2024-03-05T10:00:00.000Z", "2024-03-05T10:00:01.000Z"),
    (BOOL, "true", "false"),
    (MULTI, "a;b", "a"),
    (MULTI, ";c", "a;b"),
])
def test_real_edits_are_drift(prop, stored, read):
    assert not is_same(stored, read, prop)


def test_differences_name_only_the_edited_properties_with_the_state_values():
    schema = Schema(canonical_object("contacts"), (STRING, EMAIL, NUMBER, DATE))
    stored = {"firstname": "Ada", "email": "Ada@x.io", "amount": "10", "closedate": "2024-01-02"}
    read = {"firstname": "Grace", "email": "ada@x.io", "amount": "10.00",
            "closedate": "2024-01-02", "lastname": "someone else's"}
    assert differences(stored, read, schema) == {"firstname": "Ada"}


@pytest.mark.parametrize("value", ["-1", "x", 1.5, True, None])
def test_a_sample_size_must_be_a_whole_number(value):
    with pytest.raises(ConfigError, match="whole number"):
        sample_size(value)


def test_sample_sizes_read_from_flags_and_job_files():
    assert sample_size("100000") == 100_000
    assert sample_size(0) == 0


# -- against the sandbox: records edited in HubSpot after the state wrote them ------------


async def test_exactly_the_records_edited_in_hubspot_are_drifted_and_repaired(tmp_path):
    async with start_sandbox() as sandbox, open_client(
            Connection(sandbox.base_url, sandbox.token, rate=None)) as client:
        rows = [{"email": f"p{i:03d}@example.com", "firstname": f"Name {i}",
                 "hs_lead_status": "NEW"} for i in range(300)]
        ids: list[str] = []
        for start in range(0, 300, 100):
            answer = await client.post_json("/crm/v3/objects/contacts/batch/create",
                                            {"inputs": [{"properties": r}
                                                        for r in rows[start:start + 100]]})
            ids += [r["id"] for r in sorted(answer.json()["results"],
                                            key=lambda r: r["properties"]["email"])]
        store = DeltaStore(tmp_path / "state.db")
        first = store.begin_run()
        store.confirm([(r["email"], i, json.dumps(r, sort_keys=True))
                       for r, i in zip(rows, ids, strict=True)], first)
        store.finish_run(first)
        run = store.begin_run()
        store.mark_seen([r["email"] for r in rows], run)
        edited = ids[10:60]
        for i, record_id in enumerate(edited):  # 50 edits made in HubSpot by someone
            change = {"firstname": "Edited"} if i % 2 else {"hs_lead_status": "OPEN"}
            await client.request("PATCH", f"/crm/v3/objects/contacts/{record_id}",
                                 body=json.dumps({"properties": change}).encode())
        for record_id in ids[100:110]:  # rewrites HubSpot makes: not drift
            await client.request("PATCH", f"/crm/v3/objects/contacts/{record_id}", body=b'{'
                                 b'"properties":{"firstname":" Name %b "}}' % (
                                     str(ids.index(record_id)).encode()))
        await client.request("PATCH", f"/crm/v3/objects/contacts/{ids[200]}",
                             body=b'{"properties":{"email":"P200@EXAMPLE.COM"}}')
        updates_before = _updates(sandbox)
        schema = await fetch_schema(client, canonical_object("contacts"))
        outcome = await DriftCheck(client, canonical_object("contacts"), schema, store, run,
                                   JournalThread()).run(100_000)
        assert (outcome.checked, outcome.drifted, outcome.gone) == (300, 50, 0)
        assert _updates(sandbox) - updates_before == 50  # nothing else re-sent
        records = {r["id"]: r["properties"] for r in sandbox.records("contacts")}
        for record_id, row in zip(ids, rows, strict=True):
            assert records[record_id]["hs_lead_status"] == "NEW"
            if record_id in edited:
                assert records[record_id]["firstname"] == row["firstname"]
        store.close()


def _updates(sandbox) -> int:
    calls = sandbox.audit()["calls"]
    return calls.get("POST /crm/v3/objects/contacts/batch/update", {"inputs": 0})["inputs"]
