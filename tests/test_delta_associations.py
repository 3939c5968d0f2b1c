"""Associations in delta jobs (`hsbulk run JOB.toml` with `delta = true`): an edge is sent
only when new since the state's last confirmed write, and `mirror = true` removes the
edges this state wrote that today's input no longer holds, under the `max_archive` guard.

Calls are counted by the sandbox (its audit); every run is `engine.cli.main` in-process.
"""

import csv
from pathlib import Path

import orjson
import pytest

from engine.cli import main
from tests.conftest import SandboxThread

V4 = "POST /crm/v4/associations/"
WRITES = ("/batch/upsert", "/batch/update", "/batch/create", "/batch/archive",
          "/batch/associate/default")


@pytest.fixture
def fast_sandbox(monkeypatch):
    with SandboxThread(rate_requests=None, search_rate_per_s=None) as sandbox:
        monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", sandbox.token)
        yield sandbox


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def companies(n: int) -> list[dict[str, str]]:
    return [{"domain": f"c{i}.example.com", "name": f"Company {i}"} for i in range(n)]


def contacts(n: int, n_companies: int) -> list[dict[str, str]]:
    return [{"email": f"p{i:05d}@example.com", "firstname": f"F{i}",
             "hs_email_optout": "false", "company_domain": f"c{i % n_companies}.example.com"}
            for i in range(n)]


def job_file(tmp_path: Path, *, mirror: bool = False, delta: str = "true") -> Path:
    job = tmp_path / "nightly.toml"
    job.write_text(f"""
[job]
name = "nightly"

[[steps]]
name = "companies"
object = "companies"
source = "companies.csv"
id_property = "domain"
delta = {delta}

[[steps]]
name = "contacts"
object = "contacts"
source = "contacts.csv"
id_property = "email"
delta = {delta}
mirror = {"true" if mirror else "false"}
[[steps.associations]]
to = "companies"
column = "company_domain"
key = "domain"
""")
    return job


def night(sandbox, tmp_path: Path, **job) -> tuple[int, dict[str, dict], dict[str, int]]:
    """Run the job; (exit code, summary per step, sandbox calls by route made by it)."""
    before = {route: c["calls"] for route, c in sandbox.audit()["calls"].items()}
    summary = tmp_path / "summary.json"
    summary.unlink(missing_ok=True)
    code = main(["run", str(job_file(tmp_path, **job)), "--base-url", sandbox.base_url,
                 "--rate", "none", "--quiet", "--summary", str(summary)])
    steps = ({s["step"]: s for s in orjson.loads(summary.read_bytes())["steps"]}
             if summary.exists() else {})
    calls = {route: c["calls"] - before.get(route, 0)
             for route, c in sandbox.audit()["calls"].items()}
    return code, steps, {route: n for route, n in calls.items() if n}


def association_calls(calls: dict[str, int]) -> int:
    return sum(n for route, n in calls.items() if route.startswith(V4))


def write_calls(calls: dict[str, int]) -> int:
    return sum(n for route, n in calls.items() if route.endswith(WRITES))


def edge_pairs(sandbox) -> set[tuple[str, str]]:
    """(contact email, company domain) of every contact -> company edge in the sandbox."""
    emails = {r["id"]: r["properties"]["email"] for r in sandbox.records("contacts")}
    domains = {r["id"]: r["properties"]["domain"] for r in sandbox.records("companies")}
    return {(emails[e["fromId"]], domains[e["toId"]])
            for e in sandbox.edges("contacts", "companies")
            if e["fromId"] in emails and e["toId"] in domains}


@pytest.mark.timeout(120)
def test_nightly_job_sends_new_edges_only_and_mirrors_removed_contacts(
        tmp_path, fast_sandbox, capsys):
    rows = contacts(10_000, 100)
    write_csv(tmp_path / "companies.csv", companies(100))
    write_csv(tmp_path / "contacts.csv", rows)
    expected = {(r["email"], r["company_domain"]) for r in rows}

    code, steps, calls = night(fast_sandbox, tmp_path)
    assert code == 0
    assert steps["contacts"]["associations"] == 10_000
    assert edge_pairs(fast_sandbox) == expected

    # night 2, the same files: no association call at all (nor any other write)
    code, steps, calls = night(fast_sandbox, tmp_path)
    assert code == 0
    assert steps["contacts"]["unchanged"] == 10_000
    assert association_calls(calls) == 0 and write_calls(calls) == 0
    assert steps["contacts"]["association_calls"] == 0
    assert steps["contacts"]["associations"] == 0
    assert edge_pairs(fast_sandbox) == expected

    # night 2b: 100 contacts changed (their records are sent), their edges are not
    for row in rows[::100]:
        row["firstname"] += "-v2"
    write_csv(tmp_path / "contacts.csv", rows)
    code, steps, calls = night(fast_sandbox, tmp_path)
    assert code == 0 and steps["contacts"]["updated"] == 100
    assert association_calls(calls) == 0

    # night 3: 200 contacts removed, mirror on: exactly those and their edges go
    removed = set(range(0, 10_000, 50))
    kept = [r for i, r in enumerate(rows) if i not in removed]
    write_csv(tmp_path / "contacts.csv", kept)
    code, steps, calls = night(fast_sandbox, tmp_path, mirror=True)
    assert code == 0
    assert steps["contacts"]["archived"] == 200
    live = {r["properties"]["email"] for r in fast_sandbox.records("contacts")}
    assert live == {r["email"] for r in kept}
    assert edge_pairs(fast_sandbox) == {(r["email"], r["company_domain"]) for r in kept}
    assert len(fast_sandbox.edges("contacts", "companies")) == 9_800
    assert not any(route.endswith("/batch/create") or "associate" in route
                   for route in calls if route.startswith(V4))  # no edge was re-sent

    # removing half with the default guard (5%): nothing is archived, exit 2, says how many
    write_csv(tmp_path / "contacts.csv", kept[::2])
    capsys.readouterr()
    code, steps, calls = night(fast_sandbox, tmp_path, mirror=True)
    assert code == 2
    assert "would archive 4,900 records" in capsys.readouterr().err
    assert not any(route.endswith("/batch/archive") for route in calls)
    assert len(fast_sandbox.records("contacts")) == 9_800
    assert len(fast_sandbox.edges("contacts", "companies")) == 9_800


def test_a_moved_contact_gets_its_new_edge_and_mirror_removes_only_the_old_one(
        tmp_path, fast_sandbox):
    rows = contacts(40, 4)
    write_csv(tmp_path / "companies.csv", companies(4))
    write_csv(tmp_path / "contacts.csv", rows)
    assert night(fast_sandbox, tmp_path, mirror=True)[0] == 0

    rows[0]["company_domain"] = "c3.example.com"  # moved: c0 -> c3
    rows[1]["hs_email_optout"] = "maybe"  # refused today: its record and edge must stay
    write_csv(tmp_path / "contacts.csv", rows)
    code, steps, calls = night(fast_sandbox, tmp_path, mirror=True)
    assert code == 1  # the refused row
    assert steps["contacts"]["associations"] == 1
    assert steps["contacts"]["archived"] == 0
    assert calls.get(V4 + "contacts/companies/batch/associate/default") == 1
    assert calls.get(V4 + "contacts/companies/batch/archive") == 1
    assert edge_pairs(fast_sandbox) == {(r["email"], r["company_domain"]) for r in rows}

    rows[1]["hs_email_optout"] = "false"
    write_csv(tmp_path / "contacts.csv", rows)
    code, steps, calls = night(fast_sandbox, tmp_path, mirror=True)
    assert code == 0 and association_calls(calls) == 0
    assert edge_pairs(fast_sandbox) == {(r["email"], r["company_domain"]) for r in rows}


def test_an_interrupted_association_pass_resumes_without_resending(
        tmp_path, fast_sandbox, monkeypatch):
    """The state is diffed as the run found it: a re-run after a failure in the middle of
    the association batches sends only the batches not done, and the state ends whole."""
    from engine import associations
    from engine.errors import ConnectError

    write_csv(tmp_path / "companies.csv", companies(5))
    rows = contacts(5_000, 5)
    write_csv(tmp_path / "contacts.csv", rows[:10])
    assert night(fast_sandbox, tmp_path)[0] == 0

    original = associations._EdgeSender.send
    sent: list[int] = []

    async def flaky(self, part):
        sent.append(part.height)
        if len(sent) == 2:
            raise ConnectError("connection reset (test)")
        return await original(self, part)

    monkeypatch.setattr(associations._EdgeSender, "send", flaky)
    write_csv(tmp_path / "contacts.csv", rows)  # 4,990 new contacts: 3 batches of edges
    code, steps, calls = night(fast_sandbox, tmp_path)
    assert code == 4 and sent == [2_000, 2_000]
    code, steps, calls = night(fast_sandbox, tmp_path)
    assert code == 0
    assert sent == [2_000, 2_000, 2_000, 990]  # the first batch was not sent again
    assert edge_pairs(fast_sandbox) == {(r["email"], r["company_domain"]) for r in rows}

    for row in rows:  # every record changes; every edge is in the state already
        row["firstname"] += "-v2"
    write_csv(tmp_path / "contacts.csv", rows)
    code, steps, calls = night(fast_sandbox, tmp_path)
    assert code == 0 and steps["contacts"]["updated"] == 5_000
    assert association_calls(calls) == 0


def test_refresh_resends_every_edge(tmp_path, fast_sandbox):
    write_csv(tmp_path / "companies.csv", companies(3))
    write_csv(tmp_path / "contacts.csv", contacts(30, 3))
    assert night(fast_sandbox, tmp_path)[0] == 0
    code, steps, calls = night(fast_sandbox, tmp_path, delta='"refresh"')
    assert code == 0
    assert steps["contacts"]["associations"] == 30
    assert calls.get(V4 + "contacts/companies/batch/associate/default") == 1
