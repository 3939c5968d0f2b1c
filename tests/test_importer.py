"""End-to-end imports through the CLI against a sandbox: server state, files, exit codes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import polars as pl

from engine.cli import main
from tests.conftest import StandaloneSandbox, write_csv


def contacts(n: int, start: int = 0) -> list[list[str]]:
    return [[f"user{i}@example.com", f"First{i}", f"Last{i}", "Lead"] for i in
            range(start, start + n)]


HEADER = ["Email", "First Name", "Last Name", "Lifecycle Stage"]
MAPS = ["--map", "Email=email", "--map", "First Name=firstname", "--map",
        "Last Name=lastname", "--map", "Lifecycle Stage=lifecyclestage"]


def run(tmp_path: Path, sandbox, source: Path, *extra: str) -> tuple[int, dict]:
    summary = tmp_path / "summary.json"
    code = main(["import", str(source), "--base-url", sandbox.base_url, "--rate", "none",
                 "--checkpoint", str(tmp_path / "cp" / "job.db"), "--summary", str(summary),
                 "--quiet", *extra])
    return code, orjson.loads(summary.read_bytes())


def test_upsert_writes_every_row_and_a_rerun_sends_nothing(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(250))
    code, summary = run(tmp_path, sandbox, source, "--object", "contacts", "--mode", "upsert",
                        "--id-property", "email", *MAPS, "--results",
                        str(tmp_path / "results.csv"))
    assert code == 0
    assert (summary["rows_read"], summary["created"], summary["rejected"]) == (250, 250, 0)
    assert summary["balanced"] is True
    stored = {r["properties"]["email"]: r for r in sandbox.records("contacts")}
    assert len(stored) == 250
    assert stored["user7@example.com"]["properties"]["lifecyclestage"] == "lead"
    results = pl.read_csv(tmp_path / "results.csv", infer_schema=False)
    assert results.height == 250
    assert set(results["action"]) == {"created"}
    assert results.filter(pl.col("source_row") == "8")["id"][0] == stored[
        "user7@example.com"]["id"]
    calls = sandbox.audit()["requests"]
    code, summary = run(tmp_path, sandbox, source, "--object", "contacts", "--mode", "upsert",
                        "--id-property", "email", *MAPS)
    assert code == 0
    assert summary["created"] == 250 and summary["rows_read"] == 250
    assert sandbox.audit()["requests"] - calls == 0  # already complete: not even the schema


def test_rows_only_the_server_rejects_are_isolated(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    rows = contacts(100)
    for i in (10, 50, 99):
        rows[i][0] = f"not-an-email-{i}"
    source = write_csv(tmp_path / "contacts.csv", HEADER, rows)
    rejects = tmp_path / "rejects.csv"
    code, summary = run(tmp_path, sandbox, source, "--object", "contacts", "--mode", "create",
                        "--id-property", "email", *MAPS, "--rejects", str(rejects))
    assert code == 1
    assert (summary["created"], summary["rejected"], summary["rows_read"]) == (97, 3, 100)
    assert len(sandbox.records("contacts")) == 97
    table = pl.read_csv(rejects, infer_schema=False)
    assert sorted(table["hsbulk_source_row"].cast(int)) == [11, 51, 100]
    assert table["Email"].to_list() == ["not-an-email-10", "not-an-email-50", "not-an-email-99"]
    assert all("email" in m.lower() for m in table["hsbulk_message"])
    calls = sandbox.audit()["requests"]
    code, summary = run(tmp_path, sandbox, source, "--object", "contacts", "--mode", "create",
                        "--id-property", "email", *MAPS)
    assert code == 1 and summary["created"] == 97 and summary["rejected"] == 3
    assert sandbox.audit()["requests"] - calls == 0


def test_create_without_a_key_never_duplicates_under_lost_responses(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None, fault_lost=0.2, fault_5xx=0.1, fault_reset=0.05,
                          seed=3)
    rows = [[f"Deal {i}", str(i * 10)] for i in range(1000)]
    source = write_csv(tmp_path / "deals.csv", ["Deal Name", "Amount"], rows)
    code, summary = run(tmp_path, sandbox, source, "--object", "deals", "--mode", "create",
                        "--map", "Deal Name=dealname", "--map", "Amount=amount")
    assert code == 0, summary
    assert summary["created"] == 1000 and summary["balanced"]
    assert any("hsbulk_import_key" in note for note in summary["notes"])
    audit = sandbox.audit(keys="deals:dealname")
    assert audit["records"]["deals"]["live"] == 1000
    assert audit["duplicates"]["deals:dealname"]["extra_records"] == 0
    assert audit["faults"]["lost"] > 0


def test_update_by_record_id(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(5))
    run(tmp_path, sandbox, source, "--object", "contacts", "--mode", "upsert",
        "--id-property", "email", *MAPS)
    ids = sorted(int(r["id"]) for r in sandbox.records("contacts"))
    update = write_csv(tmp_path / "update.csv", ["Record ID", "First Name"],
                       [[str(i), f"Renamed{i}"] for i in ids] + [["999999", "Ghost"],
                                                                 ["abc", "Bad"]])
    code, summary = main(["import", str(update), "--object", "contacts", "--mode", "update",
                          "--base-url", sandbox.base_url, "--rate", "none", "--quiet",
                          "--map", "First Name=firstname",
                          "--checkpoint", str(tmp_path / "u.db"),
                          "--summary", str(tmp_path / "u.json")]), None
    summary = orjson.loads((tmp_path / "u.json").read_bytes())
    assert code == 1
    assert (summary["updated"], summary["rejected"]) == (5, 2)
    names = {r["properties"]["firstname"] for r in sandbox.records("contacts")}
    assert names == {f"Renamed{i}" for i in ids}


def test_bad_token_is_a_fatal_error(tmp_path, sandbox_env, monkeypatch, capsys):
    sandbox = sandbox_env(rate_requests=None)
    token = "pat-na1-11111111-2222-3333-4444-555555555555"
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", token)
    source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(3))
    code = main(["import", str(source), "--object", "contacts", "--id-property", "email",
                 "--base-url", sandbox.base_url, "--checkpoint", str(tmp_path / "x.db"), *MAPS])
    assert code == 3
    err = capsys.readouterr().err
    assert "401" in err and token not in err and token[-8:] not in err
    journal = tmp_path / "x.db"
    assert not journal.exists() or token.encode() not in journal.read_bytes()


def test_daily_quota_stops_with_4_and_the_rerun_finishes(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None, daily_limit=4)
    source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(500))
    args = ("--object", "contacts", "--mode", "upsert", "--id-property", "email", *MAPS)
    code, summary = run(tmp_path, sandbox, source, *args)
    assert code == 4
    assert summary["state"] == "stopped" and "daily" in summary["stop_reason"].lower()
    assert 0 < summary["created"] < 500
    sandbox.configure(daily_limit=None)
    code, summary = run(tmp_path, sandbox, source, *args)
    assert code == 0 and summary["created"] == 500
    assert len(sandbox.records("contacts")) == 500


def test_a_changed_input_is_refused_on_resume(tmp_path, sandbox_env, capsys):
    sandbox = sandbox_env(rate_requests=None, daily_limit=2)
    source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(250))
    args = ("--object", "contacts", "--mode", "upsert", "--id-property", "email", *MAPS)
    assert run(tmp_path, sandbox, source, *args)[0] == 4  # unfinished: the daily quota
    write_csv(source, HEADER, contacts(251))
    sandbox.configure(daily_limit=None)
    code = main(["import", str(source), "--base-url", sandbox.base_url, "--quiet",
                 "--checkpoint", str(tmp_path / "cp" / "job.db"), *args])
    assert code == 2
    assert "--restart" in capsys.readouterr().err


def test_checkpoint_files_are_private(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(3))
    run(tmp_path, sandbox, source, "--object", "contacts", "--id-property", "email", *MAPS)
    folder = tmp_path / "cp"
    assert oct(os.stat(folder).st_mode & 0o777) == "0o700"
    for name in os.listdir(folder):
        assert oct(os.stat(folder / name).st_mode & 0o777) == "0o600", name
        assert sandbox.token.encode() not in (folder / name).read_bytes()


def test_dry_run_sends_nothing_and_writes_what_would_be_sent(tmp_path, sandbox_env, capsys):
    sandbox = sandbox_env(rate_requests=None)
    rows = [*contacts(4), ["bad@example.com", "X", "Y", "Nonsense Stage"]]
    source = write_csv(tmp_path / "contacts.csv", HEADER, rows)
    normalized = tmp_path / "normalized.parquet"
    rejects = tmp_path / "rejects.csv"
    code = main(["import", str(source), "--object", "contacts", "--id-property", "email",
                 "--base-url", sandbox.base_url, "--dry-run", "--emit-normalized",
                 str(normalized), "--rejects", str(rejects), *MAPS])
    assert code == 1
    assert "Rejected: 1" in capsys.readouterr().out
    assert sandbox.records("contacts") == []
    sent = pl.read_parquet(normalized)
    assert sent["source_row"].to_list() == [1, 2, 3, 4]
    assert set(sent["lifecyclestage"]) == {"lead"}
    assert pl.read_csv(rejects)["hsbulk_code"].to_list() == ["INVALID_OPTION"]


def test_rate_limit_is_kept_with_zero_429s_at_full_speed(tmp_path, monkeypatch):
    """1,000 batch calls at 100/2s against a sandbox process that enforces the same window."""
    sandbox = StandaloneSandbox("--rate", "100/2s")
    try:
        monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", sandbox.token)
        source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(100_000))
        summary_path = tmp_path / "s.json"
        code = main(["import", str(source), "--object", "contacts", "--id-property", "email",
                     "--base-url", sandbox.base_url, "--rate", "100/2s", "--quiet",
                     "--checkpoint", str(tmp_path / "r.db"), "--summary", str(summary_path),
                     *MAPS])
        audit = sandbox.get("/__sandbox/audit")
    finally:
        sandbox.stop()
    summary = orjson.loads(summary_path.read_bytes())
    assert code == 0 and summary["created"] == 100_000
    assert summary["http_429"] == 0 and audit["http_429"] == 0, summary
    assert summary["api_calls"] == 1_001  # the schema, then 1,000 batches
    assert audit["window"]["max_accepted_in_any_window"] <= 100
    assert summary["api_calls"] / summary["elapsed_s"] >= 0.95 * 100 / 2, summary


def test_sigint_drains_checkpoints_and_exits_4_then_resumes(tmp_path):
    sandbox = StandaloneSandbox("--rate", "0", "--latency-ms", "40")
    try:
        env = {**os.environ, "HUBSPOT_ACCESS_TOKEN": sandbox.token}
        source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(20_000))
        summary = tmp_path / "s.json"
        command = [sys.executable, "-m", "engine", "import", str(source), "--object",
                   "contacts", "--id-property", "email", *MAPS, "--base-url",
                   sandbox.base_url, "--rate", "none", "--concurrency", "2", "--quiet",
                   "--checkpoint", str(tmp_path / "j.db"), "--summary", str(summary)]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while sandbox.get("/__sandbox/audit")["records"]["contacts"]["live"] < 1000:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 4, err
        first = orjson.loads(summary.read_bytes())
        assert first["state"] == "stopped" and first["stop_reason"] == "interrupted"
        assert 0 < first["created"] < 20_000 and first["balanced"] is False
        stored = sandbox.get("/__sandbox/audit")["records"]["contacts"]["live"]
        assert stored == first["created"]  # drained: everything sent was journaled
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        second = orjson.loads(summary.read_bytes())
        assert second["created"] + second["updated"] == 20_000 and second["balanced"]
        assert sandbox.get("/__sandbox/audit")["records"]["contacts"]["live"] == 20_000
    finally:
        sandbox.stop()


def test_create_conflicts_are_rejected_or_updated_on_request(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(3))
    run(tmp_path, sandbox, write_csv(tmp_path / "one.csv", HEADER, contacts(1, start=1)),
        "--object", "contacts", "--mode", "create", "--id-property", "email", *MAPS)
    existing = sandbox.records("contacts")[0]["id"]
    (tmp_path / "cp" / "job.db").unlink()
    rejects = tmp_path / "rejects.csv"
    code, summary = run(tmp_path, sandbox, source, "--object", "contacts", "--mode", "create",
                        "--id-property", "email", *MAPS, "--rejects", str(rejects))
    assert code == 1 and (summary["created"], summary["rejected"]) == (2, 1)
    table = pl.read_csv(rejects, infer_schema=False)
    assert table["hsbulk_code"].to_list() == ["CONFLICT"]
    assert f"Existing ID: {existing}" in table["hsbulk_message"][0]
    code, summary = main(["import", str(source), "--object", "contacts", "--mode", "create",
                          "--id-property", "email", *MAPS, "--on-conflict", "update",
                          "--base-url", sandbox.base_url, "--rate", "none", "--quiet",
                          "--checkpoint", str(tmp_path / "u.db"),
                          "--summary", str(tmp_path / "u.json")]), None
    summary = orjson.loads((tmp_path / "u.json").read_bytes())
    assert code == 0 and summary["updated"] == 3 and summary["created"] == 0
    assert len(sandbox.records("contacts")) == 3


def test_natural_key_creates_under_lost_responses_are_claimed_not_rejected(tmp_path,
                                                                           sandbox_env):
    sandbox = sandbox_env(rate_requests=None, fault_lost=0.3, seed=4)
    source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(2000))
    code, summary = run(tmp_path, sandbox, source, "--object", "contacts", "--mode", "create",
                        "--id-property", "email", *MAPS)
    assert code == 0, summary
    assert (summary["created"], summary["rejected"]) == (2000, 0)
    audit = sandbox.audit(keys="contacts:email")
    assert audit["faults"]["lost"] > 0
    assert audit["records"]["contacts"]["live"] == 2000
    assert audit["duplicates"]["contacts:email"]["extra_records"] == 0


def test_a_mode_without_its_key_is_refused_in_the_library_s_words(tmp_path, sandbox_env,
                                                                   capsys):
    sandbox = sandbox_env(rate_requests=None)
    source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(3))
    code = main(["import", str(source), "--object", "contacts", "--mode", "upsert", *MAPS,
                 "--base-url", sandbox.base_url, "--quiet",
                 "--checkpoint", str(tmp_path / "cp" / "job.db")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("hsbulk: error: mode 'upsert' needs id_property")
    assert "--" not in err and "Traceback" not in err
    assert sandbox.records("contacts") == []


def test_an_object_without_unique_properties_is_refused_in_create_mode(
        tmp_path, sandbox_env, capsys):
    # notes cannot hold the unique import key that makes a retried create safe: exit 2
    sandbox = sandbox_env(rate_requests=None)
    source = write_csv(tmp_path / "notes.csv", ["hs_note_body", "hs_timestamp"],
                       [["hello", "2024-01-01T00:00:00Z"]])
    code = main(["import", str(source), "--object", "notes", "--mode", "create",
                 "--base-url", sandbox.base_url, "--rate", "none", "--quiet",
                 "--checkpoint", str(tmp_path / "notes.db")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("hsbulk: error: cannot create the unique property") and \
        err.count("\n") == 1 and "Traceback" not in err
    assert sandbox.records("notes") == []
