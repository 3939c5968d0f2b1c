"""`hsbulk run JOB.toml`: the demo migration, checked against sets computed from the samples."""

import csv
import math
from pathlib import Path

import orjson
import polars as pl
import pytest

from engine.cli import main
from engine.errors import ConfigError
from engine.job import load_job

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def expected_sets():
    """What the demo must leave in HubSpot, computed from the sample files directly."""
    with (SAMPLES / "companies.csv").open(newline="") as handle:
        domains = {row["Website"] for row in csv.DictReader(handle)}
    contacts = {}
    with (SAMPLES / "contacts.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if not row["Last Name"].startswith("INVALID-"):
                contacts[row["Email"].lower()] = row["Company Domain"]
    deals = {row["Legacy ID"]: row for row in pl.read_parquet(SAMPLES / "deals.parquet")
             .iter_rows(named=True) if not row["Deal Name"].startswith("INVALID-")}
    contact_company = {(email, domain) for email, domain in contacts.items()
                       if domain in domains}
    deal_contact = {(legacy.lower(), row["Buyer Email"].lower()) for legacy, row in deals.items()}
    deal_company = {(legacy.lower(), row["Company Domain"]) for legacy, row in deals.items()}
    return domains, contacts, deals, contact_company, deal_contact, deal_company


def edge_set(sandbox, frm, to, from_key, to_key, type_id=None):
    ids_from = {r["id"]: r["properties"][from_key].lower()
                for r in sandbox.records(frm)}
    ids_to = {r["id"]: r["properties"][to_key].lower() for r in sandbox.records(to)}
    return {(ids_from[e["fromId"]], ids_to[e["toId"]]) for e in sandbox.edges(frm, to)
            if type_id is None or e["typeId"] == type_id}


def run_demo(tmp_path, sandbox, *extra):
    summary = tmp_path / "summary.json"
    code = main(["run", str(SAMPLES / "demo.toml"), "--base-url", sandbox.base_url,
                 "--checkpoint", str(tmp_path / "demo.db"), "--summary", str(summary),
                 "--quiet", *extra])
    return code, orjson.loads(summary.read_bytes())


def test_the_demo_migration_lands_every_record_and_association(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    code, summary = run_demo(tmp_path, sandbox, "--rate", "none", "--reports",
                             str(tmp_path / "reports"))
    domains, contacts, deals, contact_company, deal_contact, deal_company = expected_sets()
    assert code == 1  # the samples hold a few invalid rows on purpose
    steps = {s["step"]: s for s in summary["steps"]}
    assert [s["step"] for s in summary["steps"]] == ["companies", "contacts", "deals"]
    assert all(s["balanced"] for s in summary["steps"])

    assert {r["properties"]["domain"] for r in sandbox.records("companies")} == domains
    assert {r["properties"]["email"].lower() for r in sandbox.records("contacts")} == set(
        contacts)
    assert {r["properties"]["legacy_deal_id"] for r in sandbox.records("deals")} == set(deals)
    assert steps["contacts"]["rejected"] == 5000 - len(contacts)

    primary = edge_set(sandbox, "contacts", "companies", "email", "domain", type_id=1)
    assert primary == contact_company
    assert edge_set(sandbox, "contacts", "companies", "email", "domain") == contact_company
    assert edge_set(sandbox, "deals", "contacts", "legacy_deal_id", "email") == deal_contact
    assert edge_set(sandbox, "deals", "companies", "legacy_deal_id", "domain") == deal_company
    assert steps["contacts"]["associations"] == len(contact_company)
    not_found = sum(1 for d in contacts.values() if d and d not in domains)
    assert steps["contacts"]["association_rejects"] == not_found
    missing = pl.read_csv(tmp_path / "reports" / "contacts.association_rejects.csv")
    assert set(missing["hsbulk_code"]) == {"ASSOCIATION_TARGET_NOT_FOUND"}
    assert missing.height == not_found

    edges = steps["contacts"]["associations"]
    assert steps["contacts"]["association_calls"] <= math.ceil(edges / 2000) + 2
    deal_edges = steps["deals"]["associations"]
    assert deal_edges == len(deal_contact) + len(deal_company)
    assert steps["deals"]["association_calls"] == 0  # created with their associations inline

    code, again = run_demo(tmp_path, sandbox, "--rate", "none")
    assert code == 1
    assert {s["step"]: s["created"] + s["updated"] for s in again["steps"]} == {
        s["step"]: s["created"] + s["updated"] for s in summary["steps"]}
    assert sandbox.audit(keys="deals:legacy_deal_id")["duplicates"][
        "deals:legacy_deal_id"]["extra_records"] == 0


def test_a_custom_paired_label_lands_with_its_type_id_each_way(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    run_demo(tmp_path, sandbox, "--rate", "none")
    import urllib.request

    def labels(frm, to):
        request = urllib.request.Request(
            f"{sandbox.base_url}/crm/v4/associations/{frm}/{to}/labels",
            headers={"Authorization": f"Bearer {sandbox.token}"})
        with urllib.request.urlopen(request) as answer:
            return {r["label"]: r["typeId"] for r in orjson.loads(answer.read())["results"]}

    buyer = labels("deals", "contacts")["Buyer"]
    bought = labels("contacts", "deals")["Bought deal"]
    assert buyer != bought
    deal_contact = expected_sets()[4]
    forward = edge_set(sandbox, "deals", "contacts", "legacy_deal_id", "email", type_id=buyer)
    assert forward == deal_contact
    backward = edge_set(sandbox, "contacts", "deals", "email", "legacy_deal_id",
                        type_id=bought)
    assert backward == {(c, d) for d, c in deal_contact}


def write_job(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(text)
    (tmp_path / "a.csv").write_text("Email,Other\nx@y.com,1\n")
    return path


def test_a_cycle_is_a_configuration_error(tmp_path):
    path = write_job(tmp_path, """
[[steps]]
name = "a"
object = "contacts"
source = "a.csv"
[[steps.associations]]
to = "b"
column = "Other"
key = "domain"
[[steps]]
name = "b"
object = "companies"
source = "a.csv"
[[steps.associations]]
to = "a"
column = "Email"
key = "email"
""")
    with pytest.raises(ConfigError, match="cycle"):
        load_job(path)
    assert main(["run", str(path), "--base-url", "http://127.0.0.1:9"]) == 2


def test_unknown_keys_are_refused_with_the_allowed_ones(tmp_path):
    path = write_job(tmp_path, """
[[steps]]
name = "a"
object = "contacts"
source = "a.csv"
id_propery = "email"
""")
    with pytest.raises(ConfigError, match=r"unknown key.*id_propery.*allowed.*id_property"):
        load_job(path)


def test_steps_follow_their_associations(tmp_path):
    path = write_job(tmp_path, """
[[steps]]
name = "deals"
object = "deals"
source = "a.csv"
[[steps.associations]]
to = "people"
column = "Email"
key = "email"
[[steps]]
name = "people"
object = "0-1"
source = "a.csv"
""")
    job = load_job(path)
    assert [s.name for s in job.steps] == ["people", "deals"]
    assert job.steps[0].spec.object_type.name == "contacts"
    assert job.steps[1].spec.mapping.reserved == {"Email"}


async def test_a_label_whose_creation_answer_was_lost_is_found_not_refused():
    """The label's create lands but its answer is lost; the retry hears "already exists".
    The label is then read back and used, never reported as an error."""
    from engine.associations import AssociationRule, resolve_type
    from engine.client import HubSpotClient
    from engine.config import ClientSettings, Secret
    from engine.errors import ConnectError
    from engine.sandbox import SandboxSettings, running_sandbox
    from engine.schema import canonical_object

    class LosesFirstLabelAnswer:
        def __init__(self, inner):
            self.inner, self.lost = inner, 0

        async def send(self, request):
            answer = await self.inner.send(request)
            if request.method == "POST" and request.url.endswith("/labels") and not self.lost:
                self.lost += 1
                raise ConnectError("connection reset after the request was carried out")
            return answer

        async def aclose(self):
            await self.inner.aclose()

    deals, contacts = canonical_object("deals"), canonical_object("contacts")
    rule = AssociationRule("contacts", contacts, "Buyer Email", "email", label="Champion",
                           create_label=True, inverse_label="Champion of")
    async with running_sandbox(SandboxSettings(rate_requests=0)) as sandbox:
        settings = ClientSettings(sandbox.base_url, Secret(sandbox.token), rate=None,
                                  search_rate=None)
        async with HubSpotClient(settings) as client:
            client.transport = LosesFirstLabelAnswer(client.transport)
            kind = await resolve_type(client, deals, contacts, rule)
            assert client.transport.lost == 1
            assert client.stats.statuses[400] == 1  # the retry was refused by name
            assert await resolve_type(client, deals, contacts, rule) == kind
            listed = (await client.get_json("/crm/v4/associations/deals/contacts/labels"))
    assert kind is not None and kind.category == "USER_DEFINED"
    champion = [r for r in listed["results"] if r.get("label") == "Champion"]
    assert [r["typeId"] for r in champion] == [kind.type_id]  # created once


async def test_a_label_starting_with_a_digit_gets_a_name_hubspot_accepts():
    # 003_b03644bcf593c30d.txt: label names may not start with a digit (the sandbox refuses)
    from engine.associations import AssociationRule, resolve_type
    from engine.client import HubSpotClient
    from engine.config import ClientSettings, Secret
    from engine.sandbox import SandboxSettings, running_sandbox
    from engine.schema import canonical_object

    deals, contacts = canonical_object("deals"), canonical_object("contacts")
    rule = AssociationRule("contacts", contacts, "Buyer Email", "email", label="2nd buyer",
                           create_label=True)
    async with running_sandbox(SandboxSettings(rate_requests=0)) as sandbox:
        settings = ClientSettings(sandbox.base_url, Secret(sandbox.token), rate=None,
                                  search_rate=None)
        async with HubSpotClient(settings) as client:
            kind = await resolve_type(client, deals, contacts, rule)
            listed = await client.get_json("/crm/v4/associations/deals/contacts/labels")
    assert kind is not None
    assert [r["typeId"] for r in listed["results"] if r.get("label") == "2nd buyer"] == [
        kind.type_id]
