"""Links to records already in HubSpot: `hsbulk import --associate` and job steps'
`[[steps.associations]]` with `object = ...` (issue #15).

Every run is `engine.cli.main` in-process against a threaded sandbox; edges are read back
from the sandbox's edge dump, reads counted by its audit.
"""

import urllib.request
from pathlib import Path

import orjson
import polars as pl
import pytest

from engine.cli import main
from engine.errors import ConfigError
from engine.job import load_job
from tests.conftest import write_csv

COMPANY_READS = "POST /crm/v3/objects/companies/batch/read"


def seed_companies(sandbox, domains: list[str]) -> dict[str, str]:
    """Companies created through the sandbox's API before any run: domain -> id."""
    ids = {}
    for start in range(0, len(domains), 100):  # 100 inputs a batch call
        inputs = [{"properties": {"domain": d, "name": f"Existing {d}"}}
                  for d in domains[start:start + 100]]
        request = urllib.request.Request(
            f"{sandbox.base_url}/crm/v3/objects/companies/batch/create",
            data=orjson.dumps({"inputs": inputs}), method="POST",
            headers={"Authorization": f"Bearer {sandbox.token}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request) as answer:
            results = orjson.loads(answer.read())["results"]
        ids.update({r["properties"]["domain"]: r["id"] for r in results})
    return ids


def edges(sandbox, frm: str, to: str, from_key: str, to_key: str, type_id=None):
    """(from record's key, to record's key) of every edge frm -> to in the sandbox."""
    names_from = {r["id"]: r["properties"][from_key] for r in sandbox.records(frm)}
    names_to = {r["id"]: r["properties"][to_key] for r in sandbox.records(to)}
    return {(names_from[e["fromId"]], names_to[e["toId"]]) for e in sandbox.edges(frm, to)
            if type_id is None or e["typeId"] == type_id}


def calls(sandbox, route: str) -> tuple[int, int]:
    """(calls, inputs) the sandbox worked for `route` so far."""
    seen = sandbox.audit()["calls"].get(route, {"calls": 0, "inputs": 0})
    return seen["calls"], seen["inputs"]


JOB = """
[job]
name = "links"

[[steps]]
name = "deals"
object = "deals"
source = "deals.csv"
mode = "create"
[steps.map]
"Deal" = "dealname"
"Stage" = "dealstage"
"Pipeline" = "pipeline"
"Owner" = "hubspot_owner_id"
[[steps.associations]]
to = "contacts"
column = "Buyer"
key = "email"
[[steps.associations]]
object = "companies"
column = "Account"
key = "domain"

[[steps]]
name = "contacts"
object = "contacts"
source = "contacts.csv"
id_property = "email"
[[steps.associations]]
object = "companies"
column = "Employer"
key = "domain"
[[steps.associations]]
to = "companies"
column = "Partner"
key = "domain"

[[steps]]
name = "companies"
object = "companies"
source = "companies.csv"
id_property = "domain"
"""


def test_a_job_links_to_companies_it_created_and_to_companies_already_there(
        tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None, search_rate_per_s=None)
    seed_companies(sandbox, ["old1.example", "old2.example"])
    (tmp_path / "job.toml").write_text(JOB)
    write_csv(tmp_path / "companies.csv", ["domain", "name"],
              [["new1.example", "New One"], ["new2.example", "New Two"]])
    write_csv(tmp_path / "contacts.csv", ["email", "firstname", "Employer", "Partner"], [
        ["a@x.example", "A", "https://www.New1.example/about", "new2.example"],
        ["b@x.example", "B", "OLD1.example", ""],
        ["c@x.example", "C", " www.old2.example/contact?x=1 ", "NEW1.example"],
        ["d@x.example", "D", "http://Old1.Example:8080", ""],
        ["e@x.example", "E", "nowhere.example", ""],
    ])
    # stages by label (the same label in two pipelines), owners by e-mail in any case
    write_csv(tmp_path / "deals.csv",
              ["Deal", "Stage", "Pipeline", "Owner", "Buyer", "Account"], [
        ["Deal 1", "Appointment Scheduled", "", " Alice.Martin@Example.com ", " A@X.example ",
         "https://old2.example/"],
        ["Deal 2", "closed won", "Renewals", "BRUNO.KELLER@example.com", "c@x.example",
         "WWW.NEW1.EXAMPLE"],
        ["Deal 3", "Closed Won", "Sales Pipeline", "", "", ""],
    ])
    summary = tmp_path / "summary.json"
    code = main(["run", str(tmp_path / "job.toml"), "--base-url", sandbox.base_url,
                 "--rate", "none", "--quiet", "--checkpoint", str(tmp_path / "job.db"),
                 "--summary", str(summary), "--reports", str(tmp_path / "reports")])

    assert code == 1  # e@x.example's employer does not exist; every record is written
    steps = {s["step"]: s for s in orjson.loads(summary.read_bytes())["steps"]}
    assert list(steps) == ["companies", "contacts", "deals"]  # targets first
    assert sorted(r["properties"]["domain"] for r in sandbox.records("companies")) == [
        "new1.example", "new2.example", "old1.example", "old2.example"]
    assert len(sandbox.records("contacts")) == 5 and len(sandbox.records("deals")) == 3
    assert edges(sandbox, "contacts", "companies", "email", "domain") == {
        ("a@x.example", "new1.example"), ("a@x.example", "new2.example"),
        ("b@x.example", "old1.example"), ("c@x.example", "old2.example"),
        ("c@x.example", "new1.example"), ("d@x.example", "old1.example")}
    assert edges(sandbox, "deals", "contacts", "dealname", "email") == {
        ("Deal 1", "a@x.example"), ("Deal 2", "c@x.example")}
    assert edges(sandbox, "deals", "companies", "dealname", "domain") == {
        ("Deal 1", "old2.example"), ("Deal 2", "new1.example")}
    stages = {r["properties"]["dealname"]: tuple(r["properties"].get(p) for p in (
        "pipeline", "dealstage", "hubspot_owner_id")) for r in sandbox.records("deals")}
    assert stages == {"Deal 1": (None, "appointmentscheduled", "41629779"),
                      "Deal 2": ("87123456", "87123459", "52384011"),
                      "Deal 3": ("default", "closedwon", None)}

    # the job's own companies came from the journal; only those it did not write were read
    assert calls(sandbox, COMPANY_READS) == (1, 3)  # old1, old2, nowhere: one call
    assert steps["contacts"]["association_rejects"] == 1
    missing = pl.read_csv(tmp_path / "reports" / "contacts.association_rejects.csv",
                          infer_schema=False)
    assert missing.select("hsbulk_column", "hsbulk_value", "hsbulk_code").rows() == [
        ("Employer", "nowhere.example", "ASSOCIATION_TARGET_NOT_FOUND")]
    assert "nowhere.example" in missing["hsbulk_message"][0]


CONTACTS = ["Email", "First Name", "Company Domain"]
MAPS = ["--map", "Email=email", "--map", "First Name=firstname"]


def run_import(tmp_path: Path, sandbox, source: Path, *extra: str) -> tuple[int, dict]:
    summary = tmp_path / "summary.json"
    summary.unlink(missing_ok=True)
    code = main(["import", str(source), "--object", "contacts", "--id-property", "email",
                 *MAPS, "--base-url", sandbox.base_url, "--rate", "none", "--quiet",
                 "--checkpoint", str(tmp_path / "import.db"), "--summary", str(summary),
                 *extra])
    return code, orjson.loads(summary.read_bytes()) if summary.exists() else {}


def test_import_associate_links_each_row_with_its_label_and_lists_a_missing_target(
        tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None, search_rate_per_s=None)
    seed_companies(sandbox, ["acme.de", "globex.example"])
    source = write_csv(tmp_path / "contacts.csv", CONTACTS, [
        ["ann@acme.de", "Ann", "https://www.Acme.de/x"],
        ["bob@globex.example", "Bob", "GLOBEX.example"],
        ["cy@initech.example", "Cy", "initech.example"],
        ["dee@example.org", "Dee", ""],
    ])
    rejects = tmp_path / "rejects.csv"
    code, summary = run_import(tmp_path, sandbox, source, "--associate",
                               "companies:domain=Company Domain:Primary",
                               "--rejects", str(rejects))

    assert code == 1
    assert (summary["created"], summary["rejected"]) == (4, 0)  # every record written
    assert summary["associations"] == 2 and summary["association_rejects"] == 1
    assert sorted(r["properties"]["email"] for r in sandbox.records("contacts")) == [
        "ann@acme.de", "bob@globex.example", "cy@initech.example", "dee@example.org"]
    primary = {e["label"] for e in sandbox.edges("contacts", "companies") if e["typeId"] == 1}
    assert primary == {"Primary"}
    assert edges(sandbox, "contacts", "companies", "email", "domain", type_id=1) == {
        ("ann@acme.de", "acme.de"), ("bob@globex.example", "globex.example")}
    assert len(sandbox.records("companies")) == 2  # nothing created on the target side
    table = pl.read_csv(rejects, infer_schema=False)
    assert table.select("hsbulk_source_row", "hsbulk_column", "hsbulk_value",
                        "hsbulk_code", "Email").rows() == [
        ("3", "Company Domain", "initech.example", "ASSOCIATION_TARGET_NOT_FOUND",
         "cy@initech.example")]

    requests = sandbox.audit()["requests"]  # the same command again: already complete
    code, again = run_import(tmp_path, sandbox, source, "--associate",
                             "companies:domain=Company Domain:Primary")
    assert code == 1 and again["associations"] == 2
    assert sandbox.audit()["requests"] == requests
    code, _ = run_import(tmp_path, sandbox, source, "--associate",  # another link: a new run
                         "companies:domain=Company Domain")
    assert code == 1 and sandbox.audit()["requests"] > requests


def test_import_associate_by_record_id_in_create_mode(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None, search_rate_per_s=None)
    ids = seed_companies(sandbox, ["acme.de", "globex.example"])
    source = write_csv(tmp_path / "contacts.csv", ["Email", "First Name", "Company ID"], [
        ["ann@acme.de", "Ann", ids["acme.de"]],
        ["bob@globex.example", "Bob", f" {ids['globex.example']} "],
        ["cy@initech.example", "Cy", "not-an-id"],
    ])
    code, summary = run_import(tmp_path, sandbox, source, "--mode", "create",
                               "--associate", "companies:hs_object_id=Company ID")
    assert code == 1 and summary["created"] == 3 and summary["association_rejects"] == 1
    assert edges(sandbox, "contacts", "companies", "email", "domain") == {
        ("ann@acme.de", "acme.de"), ("bob@globex.example", "globex.example")}
    # created with their links inline: no association call after the records
    assert not any(route.startswith("POST /crm/v4/associations/")
                   for route in sandbox.audit()["calls"])


@pytest.mark.timeout(60)
def test_an_interrupted_import_resumes_without_reading_its_targets_again(
        tmp_path, sandbox_env, monkeypatch):
    from engine import associations
    from engine.errors import ConnectError

    sandbox = sandbox_env(rate_requests=None, search_rate_per_s=None)
    domains = [f"c{i}.example" for i in range(150)]
    seed_companies(sandbox, domains)
    rows = [[f"p{i}@example.org", f"P{i}", f"https://www.{domains[i % 150]}/"]
            for i in range(300)]
    source = write_csv(tmp_path / "contacts.csv", CONTACTS, rows)

    original = associations._EdgeSender.send
    sent: list[int] = []

    async def flaky(self, part):
        sent.append(part.height)
        if len(sent) == 1:
            raise ConnectError("connection reset (test)")
        return await original(self, part)

    monkeypatch.setattr(associations._EdgeSender, "send", flaky)
    args = ("--associate", "companies:domain=Company Domain")
    code, summary = run_import(tmp_path, sandbox, source, *args)
    assert code == 4 and summary["state"] == "stopped"
    assert calls(sandbox, COMPANY_READS) == (2, 150)  # 100 keys a call
    assert sandbox.edges("contacts", "companies") == []

    code, summary = run_import(tmp_path, sandbox, source, *args)
    assert code == 0 and summary["associations"] == 300
    assert calls(sandbox, COMPANY_READS) == (2, 150)  # the ids came from the journal
    assert edges(sandbox, "contacts", "companies", "email", "domain") == {
        (f"p{i}@example.org", domains[i % 150]) for i in range(300)}
    assert len(sandbox.records("contacts")) == 300


def test_a_key_that_names_no_single_record_is_refused_before_any_write(
        tmp_path, sandbox_env, capsys):
    sandbox = sandbox_env(rate_requests=None, search_rate_per_s=None)
    source = write_csv(tmp_path / "contacts.csv", CONTACTS, [["ann@acme.de", "Ann", "Acme"]])
    code, _ = run_import(tmp_path, sandbox, source, "--associate",
                         "companies:name=Company Domain")
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("hsbulk: error:") and "'name'" in err and "Traceback" not in err
    assert sandbox.records("contacts") == []
    code, _ = run_import(tmp_path, sandbox, source, "--associate", "companies=Company Domain")
    assert code == 2
    assert "OBJECT:KEY=COLUMN[:LABEL]" in capsys.readouterr().err


def test_an_association_names_either_a_step_or_an_object(tmp_path):
    (tmp_path / "a.csv").write_text("Email,Site\nx@y.com,y.com\n")
    job = tmp_path / "job.toml"
    base = '[[steps]]\nname = "a"\nobject = "contacts"\nsource = "a.csv"\n' \
           '[[steps.associations]]\ncolumn = "Site"\nkey = "domain"\n'
    job.write_text(base + 'object = "companies"\nto = "a"\n')
    with pytest.raises(ConfigError, match="either `to`"):
        load_job(job)
    job.write_text(base + 'object = "companies"\n')
    (rule,) = load_job(job).steps[0].associations
    assert rule.to_step is None and rule.to_object.name == "companies"
    assert load_job(job).steps[0].spec.mapping.reserved == frozenset({"Site"})


def test_a_delta_import_sends_only_links_new_since_the_last_night(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None, search_rate_per_s=None)
    seed_companies(sandbox, ["acme.de", "globex.example"])
    rows = [["ann@acme.de", "Ann", "acme.de"], ["bob@globex.example", "Bob", "globex.example"]]
    source = write_csv(tmp_path / "contacts.csv", CONTACTS, rows)
    args = ("--delta", "--associate", "companies:domain=Company Domain")

    def association_calls() -> int:
        return sum(c["calls"] for route, c in sandbox.audit()["calls"].items()
                   if route.startswith("POST /crm/v4/associations/"))

    assert run_import(tmp_path, sandbox, source, *args)[0] == 0
    assert association_calls() == 1
    rows[1][2] = "https://www.Acme.de/"  # Bob moved to Acme; Ann is unchanged
    write_csv(source, CONTACTS, rows)
    code, summary = run_import(tmp_path, sandbox, source, *args)
    assert code == 0 and summary["associations"] == 1
    assert association_calls() == 2
    assert ("bob@globex.example", "acme.de") in edges(
        sandbox, "contacts", "companies", "email", "domain")
