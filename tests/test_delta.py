"""`--delta` nightly loads at the CLI: only what changed is sent, the state survives kills.

Write calls are counted by the sandbox (its audit); the request bodies are recorded by
wrapping the client's `request` (in-process runs of `engine.cli.main`).
"""

import csv
import json
import math
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from engine.cli import main
from engine.client import HubSpotClient
from tests.conftest import SandboxThread, StandaloneSandbox
from tests.test_kill import kill_at_progress

COLUMNS = ["email", "firstname", "lastname", "city", "jobtitle"]
WRITES = ("/batch/upsert", "/batch/update", "/batch/create", "/batch/archive")


def write_calls(audit: dict) -> int:
    return sum(c["calls"] for route, c in audit["calls"].items()
               if route.startswith("POST") and route.endswith(WRITES))


def contact(i: int) -> dict[str, str]:
    return {"email": f"person{i}@example.com", "firstname": f"F{i}", "lastname": f"L{i}",
            "city": ["Paris", "Lyon", "Rome", "Oslo"][i % 4], "jobtitle": f"T{i % 7}"}


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]) if rows else COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def night_2(rows: list[dict[str, str]], rng: random.Random, changed_share: float,
            new_share: float) -> tuple[list[dict[str, str]], dict[str, dict[str, str]]]:
    """Change one or two columns of `changed_share` of the rows, add `new_share` new rows;
    returns the new rows and, per changed email, the properties that changed."""
    out = [dict(r) for r in rows]
    changes: dict[str, dict[str, str]] = {}
    for i in rng.sample(range(len(rows)), int(len(rows) * changed_share)):
        columns = rng.sample(["firstname", "lastname", "city", "jobtitle"], rng.choice([1, 2]))
        for column in columns:
            out[i][column] = f"{out[i][column]}-v2"
        changes[out[i]["email"]] = {c: out[i][c] for c in columns}
    start = len(rows)
    out += [contact(i) for i in range(start, start + int(len(rows) * new_share))]
    return out, changes


@pytest.fixture
def recorded(monkeypatch):
    """The bodies of every write call the client makes (path, parsed body)."""
    bodies: list[tuple[str, dict]] = []
    original = HubSpotClient.request

    async def request(self, method, path, *args, **kwargs):
        if path.endswith(WRITES):
            body = kwargs.get("body", args[0] if args else None)
            bodies.append((path, json.loads(body)))
        return await original(self, method, path, *args, **kwargs)

    monkeypatch.setattr(HubSpotClient, "request", request)
    return bodies


@pytest.fixture
def fast_sandbox(monkeypatch):
    with SandboxThread(rate_requests=None, search_rate_per_s=None) as sandbox:
        monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", sandbox.token)
        yield sandbox


def delta_import(sandbox, source: Path, tmp_path: Path, *extra: str) -> tuple[int, dict]:
    summary = tmp_path / "summary.json"
    code = main(["import", str(source), "--object", "contacts", "--id-property", "email",
                 "--delta", *extra, "--base-url", sandbox.base_url, "--rate", "none",
                 "--quiet", "--checkpoint", str(tmp_path / "nightly.db"),
                 "--summary", str(summary)])
    return code, orjson.loads(summary.read_bytes())


def stored_contacts(sandbox) -> dict[str, dict]:
    return {r["properties"]["email"]: r["properties"] for r in sandbox.records("contacts")}


@pytest.mark.timeout(120)
def test_three_nights_send_only_what_changed(tmp_path, fast_sandbox, recorded):
    rng = random.Random(12)
    rows = [contact(i) for i in range(100_000)]
    source = tmp_path / "contacts.csv"
    write_rows(source, rows)

    code, night1 = delta_import(fast_sandbox, source, tmp_path)
    assert code == 0
    assert (night1["created"], night1["new"], night1["unchanged"]) == (100_000, 100_000, 0)

    rows2, changes = night_2(rows, rng, 0.01, 0.005)
    write_rows(source, rows2)
    before = write_calls(fast_sandbox.audit())
    recorded.clear()
    code, night2 = delta_import(fast_sandbox, source, tmp_path)
    assert code == 0
    sent = len(changes) + 500
    calls = write_calls(fast_sandbox.audit()) - before
    assert calls <= math.ceil(sent / 100) + 5, calls
    assert night2["rows_read"] == 100_500 and night2["balanced"]
    assert (night2["changed"], night2["new"], night2["unchanged"]) == (1_000, 500, 99_000)
    assert (night2["updated"], night2["created"]) == (1_000, 500)
    # every body of a known record holds exactly its changed properties
    sent_props = {i["id"]: i["properties"] for _, body in recorded for i in body["inputs"]}
    assert len(sent_props) == sent
    for email, changed in changes.items():
        assert sent_props[email] == changed, email
    stored = stored_contacts(fast_sandbox)
    assert len(stored) == 100_500
    for email, changed in changes.items():
        assert {k: stored[email][k] for k in changed} == changed, email
    for row in rows2[100_000:]:
        assert {k: stored[row["email"]][k] for k in COLUMNS} == row

    before = write_calls(fast_sandbox.audit())
    code, night3 = delta_import(fast_sandbox, source, tmp_path)
    assert code == 0
    assert write_calls(fast_sandbox.audit()) == before
    assert (night3["unchanged"], night3["changed"], night3["new"]) == (100_500, 0, 0)
    assert night3["balanced"] and night3["api_calls"] <= 1  # the schema read only


def test_full_rows_send_whole_rows_and_refresh_resends_everything(tmp_path, fast_sandbox,
                                                                   recorded):
    rows = [contact(i) for i in range(300)]
    source = tmp_path / "contacts.csv"
    write_rows(source, rows)
    assert delta_import(fast_sandbox, source, tmp_path)[0] == 0
    rows[7]["city"] = "Berlin"
    write_rows(source, rows)
    recorded.clear()
    code, summary = delta_import(fast_sandbox, source, tmp_path, "full-rows")
    assert code == 0 and summary["changed"] == 1 and summary["unchanged"] == 299
    (_, body), = recorded
    assert body["inputs"][0]["properties"] == rows[7]
    recorded.clear()
    code, summary = delta_import(fast_sandbox, source, tmp_path, "refresh")
    assert code == 0 and summary["updated"] == 300 and summary["unchanged"] == 0
    assert sum(len(b["inputs"]) for _, b in recorded) == 300
    recorded.clear()
    code, summary = delta_import(fast_sandbox, source, tmp_path)  # the rebuilt state
    assert code == 0 and summary["unchanged"] == 300 and recorded == []


def test_empty_cells_are_no_change_and_rejected_rows_stay_unconfirmed(tmp_path, fast_sandbox,
                                                                     recorded):
    rows = [{**contact(i), "lifecyclestage": "lead"} for i in range(10)]
    source = tmp_path / "contacts.csv"
    write_rows(source, rows)
    assert delta_import(fast_sandbox, source, tmp_path)[0] == 0
    rows[1]["city"] = ""  # an empty cell never clears: nothing to send
    rows[2]["firstname"] = "Fixed"
    rows[2]["lifecyclestage"] = "bogus"  # the row is rejected: not sent, not confirmed
    write_rows(source, rows)
    recorded.clear()
    code, summary = delta_import(fast_sandbox, source, tmp_path)
    assert code == 1 and summary["rejected"] == 1 and summary["unchanged"] == 9
    assert recorded == [] and summary["balanced"]
    rows[2]["lifecyclestage"] = "lead"
    write_rows(source, rows)
    code, summary = delta_import(fast_sandbox, source, tmp_path)
    assert code == 0 and summary["changed"] == 1
    assert recorded[-1][1]["inputs"][0]["properties"] == {"firstname": "Fixed"}
    assert stored_contacts(fast_sandbox)["person2@example.com"]["firstname"] == "Fixed"


def test_delta_needs_a_natural_key(tmp_path, fast_sandbox, capsys):
    source = tmp_path / "contacts.csv"
    write_rows(source, [contact(1)])
    code = main(["import", str(source), "--object", "contacts", "--mode", "create",
                 "--delta", "--base-url", fast_sandbox.base_url, "--quiet",
                 "--checkpoint", str(tmp_path / "j.db")])
    assert code == 2
    err = capsys.readouterr().err
    assert "hsbulk: error: --delta needs a natural key" in err and "Traceback" not in err


def test_job_step_with_delta(tmp_path, fast_sandbox, recorded):
    rows = [contact(i) for i in range(50)]
    source = tmp_path / "contacts.csv"
    write_rows(source, rows)
    job = tmp_path / "nightly.toml"
    job.write_text('[job]\nname = "nightly"\n[[steps]]\nname = "contacts"\nobject = "contacts"\n'
                   'source = "contacts.csv"\nid_property = "email"\ndelta = true\n'
                   'state = "state/contacts.db"\n')

    def run() -> dict:
        summary = tmp_path / "job.json"
        assert main(["run", str(job), "--base-url", fast_sandbox.base_url, "--rate", "none",
                     "--quiet", "--summary", str(summary)]) == 0
        return orjson.loads(summary.read_bytes())

    assert run()["created"] == 50
    assert (tmp_path / "state" / "contacts.db").exists()
    recorded.clear()
    assert run()["unchanged"] == 50 and recorded == []  # the same file: read, nothing sent
    rows[3]["jobtitle"] = "CEO"
    write_rows(source, rows)
    assert run()["updated"] == 1
    assert recorded[-1][1]["inputs"][0]["properties"] == {"jobtitle": "CEO"}


# -- the kill test --------------------------------------------------------------------------

KILL_ROWS = 20_000


def done_batches(journal: Path) -> int:
    """Batches the journal's running run has finished (0 while it holds last night's)."""
    if not journal.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1) as db:
            running = db.execute("select count(*) from run where state='RUNNING'").fetchone()
            if not running or not running[0]:
                return 0
            return db.execute("select count(*) from batches where state='DONE' and step="
                              "'import'").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.timeout(300)
def test_killed_delta_night_leaves_hubspot_and_state_right(tmp_path):
    """SIGKILL a night-2 delta run at 10 random moments (5xx and lost answers in the
    sandbox), re-run each time: HubSpot equals the input, no duplicates, and the next
    unchanged night sends nothing."""
    sandbox = StandaloneSandbox("--rate", "0", "--fault-5xx", "0.02", "--fault-lost", "0.01",
                                "--seed", "3")
    try:
        rng = random.Random(21)
        rows = [contact(i) for i in range(KILL_ROWS)]
        source = tmp_path / "contacts.csv"
        write_rows(source, rows)
        env = {**os.environ, "HUBSPOT_ACCESS_TOKEN": sandbox.token}
        journal = tmp_path / "nightly.db"
        summary = tmp_path / "summary.json"
        command = [sys.executable, "-m", "engine", "import", str(source), "--object",
                   "contacts", "--id-property", "email", "--delta", "--base-url",
                   sandbox.base_url, "--rate", "none", "--quiet", "--concurrency", "4",
                   "--checkpoint", str(journal), "--summary", str(summary)]

        def run() -> dict:
            done = subprocess.run(command, env=env, capture_output=True, text=True,
                                  timeout=120)
            assert done.returncode == 0, done.stderr[-3000:]
            return orjson.loads(summary.read_bytes())

        night1 = run()  # answers lost after the write: some creates come back as updates
        assert night1["created"] + night1["updated"] == KILL_ROWS == night1["new"]
        # night 2: a quarter of the rows changed and 2% new, so the run lasts ~55 batches
        rows2, changes = night_2(rows, rng, 0.25, 0.02)
        write_rows(source, rows2)
        thresholds = sorted(rng.sample(range(1, 50), 10))
        killed = kill_at_progress(command, env, journal, thresholds, done_batches)
        assert killed >= 8
        night2 = run()
        assert night2["resumed"] and night2["balanced"], night2
        assert night2["changed"] == len(changes) and night2["new"] == 400
        assert night2["updated"] + night2["created"] == len(changes) + 400

        audit = sandbox.get("/__sandbox/audit?keys=contacts:email")
        assert audit["duplicates"]["contacts:email"]["extra_records"] == 0
        assert audit["faults"]["lost"] > 0
        stored = {r["properties"]["email"]: r["properties"]
                  for r in sandbox.get("/__sandbox/records/contacts")["results"]}
        assert len(stored) == len(rows2)
        for row in rows2:
            assert {k: stored[row["email"]].get(k) for k in COLUMNS} == row, row["email"]

        before = write_calls(sandbox.get("/__sandbox/audit"))
        night3 = run()
        assert write_calls(sandbox.get("/__sandbox/audit")) == before
        assert night3["unchanged"] == len(rows2) and night3["balanced"]
    finally:
        sandbox.stop()
