"""`--duplicates reject|first|last`: two rows with one natural key are never both sent.

At the CLI against the sandbox: what HubSpot holds, the results and rejects files, the
summary and the exit code; duplicates across input chunks (a glob of two files is read
as two chunks) and across batches; `last` killed -9 and resumed.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import orjson
import polars as pl
import pytest

from engine.cli import main
from tests.conftest import StandaloneSandbox
from tests.test_kill import kill_at_progress

HEADER = ["Email", "First Name"]
MAPS = ["--map", "Email=email", "--map", "First Name=firstname"]


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def two_files(tmp_path: Path) -> str:
    """Rows 1-150 in one file, 151-300 in a second (two chunks): 150 keys, each of the
    first 20 given again in the second file with another case and another first name."""
    first = [[f"user{i}@example.com", f"First{i}"] for i in range(150)]
    second = [[f"User{i}@Example.com", f"Again{i}"] for i in range(20)]
    second += [[f"other{i}@example.com", f"Other{i}"] for i in range(130)]
    write_csv(tmp_path / "part_1.csv", first)
    write_csv(tmp_path / "part_2.csv", second)
    return str(tmp_path / "part_*.csv")


def run(tmp_path: Path, sandbox, source: str, *extra: str) -> tuple[int, dict]:
    summary = tmp_path / "summary.json"
    code = main(["import", source, "--object", "contacts", "--id-property", "email", *MAPS,
                 "--base-url", sandbox.base_url, "--rate", "none", "--quiet",
                 "--checkpoint", str(tmp_path / "cp" / "job.db"), "--summary", str(summary),
                 "--results", str(tmp_path / "results.csv"),
                 "--rejects", str(tmp_path / "rejects.csv"), *extra])
    return code, orjson.loads(summary.read_bytes())


def names_by_email(sandbox) -> dict[str, str]:
    return {r["properties"]["email"].lower(): r["properties"]["firstname"]
            for r in sandbox.records("contacts")}


def test_reject_is_the_default_and_names_the_first_row(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    code, summary = run(tmp_path, sandbox, two_files(tmp_path))
    assert code == 1
    assert (summary["rows_read"], summary["created"], summary["rejected"],
            summary["skipped"]) == (300, 280, 20, 0)
    assert summary["balanced"]
    stored = names_by_email(sandbox)
    assert len(stored) == 280
    assert stored["user7@example.com"] == "First7"  # the first row, never overwritten
    rejects = pl.read_csv(tmp_path / "rejects.csv", infer_schema=False)
    assert rejects.height == 20
    row = rejects.filter(pl.col("hsbulk_source_row") == "158").row(0, named=True)
    assert (row["hsbulk_code"], row["hsbulk_column"], row["hsbulk_value"].lower()) == (
        "DUPLICATE_KEY", "Email", "user7@example.com")
    assert row["hsbulk_message"].startswith("same email as row 8")
    assert (row["Email"], row["First Name"]) == ("User7@Example.com", "Again7")


def test_first_sends_the_first_row_and_skips_the_others(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    code, summary = run(tmp_path, sandbox, two_files(tmp_path), "--duplicates", "first")
    assert code == 0
    assert (summary["created"], summary["rejected"], summary["skipped"]) == (280, 0, 20)
    assert summary["balanced"]
    stored = names_by_email(sandbox)
    assert stored["user7@example.com"] == "First7"
    results = pl.read_csv(tmp_path / "results.csv", infer_schema=False)
    assert results.height == 300
    assert results["source_row"].to_list() == [str(i) for i in range(1, 301)]
    skipped = results.filter(pl.col("action") == "skipped")
    assert skipped.height == 20
    sent = results.filter(pl.col("source_row") == "8").row(0, named=True)
    twin = results.filter(pl.col("source_row") == "158").row(0, named=True)
    assert (twin["action"], twin["email"].lower(), twin["id"]) == (
        "skipped", "user7@example.com", sent["id"])
    assert pl.read_csv(tmp_path / "rejects.csv", infer_schema=False).height == 0


def test_last_sends_the_last_row(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    code, summary = run(tmp_path, sandbox, two_files(tmp_path), "--duplicates", "last")
    assert code == 0
    assert (summary["created"], summary["rejected"], summary["skipped"]) == (280, 0, 20)
    stored = names_by_email(sandbox)
    assert len(stored) == 280
    assert stored["user7@example.com"] == "Again7"
    assert stored["user30@example.com"] == "First30"
    results = pl.read_csv(tmp_path / "results.csv", infer_schema=False)
    early = results.filter(pl.col("source_row") == "8").row(0, named=True)
    late = results.filter(pl.col("source_row") == "158").row(0, named=True)
    assert (early["action"], late["action"]) == ("skipped", "created")
    assert early["id"] == late["id"] == next(
        r["id"] for r in sandbox.records("contacts")
        if r["properties"]["email"].lower() == "user7@example.com")


def test_update_by_record_id_rejects_a_repeated_id(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    run(tmp_path, sandbox, str(write_csv(tmp_path / "c.csv", [["a@example.com", "A"]])))
    (rid,) = [r["id"] for r in sandbox.records("contacts")]
    update = write_csv(tmp_path / "u.csv", [[rid, "One"], [f" {rid}", "Two"]],
                       ["Record ID", "First Name"])
    code = main(["import", str(update), "--object", "contacts", "--mode", "update",
                 "--map", "First Name=firstname", "--base-url", sandbox.base_url,
                 "--rate", "none", "--quiet", "--checkpoint", str(tmp_path / "u.db"),
                 "--rejects", str(tmp_path / "u_rejects.csv")])
    assert code == 1
    assert names_by_email(sandbox) == {"a@example.com": "One"}
    rejects = pl.read_csv(tmp_path / "u_rejects.csv", infer_schema=False)
    assert rejects.select("hsbulk_source_row", "hsbulk_column", "hsbulk_code").rows() == [
        ("2", "Record ID", "DUPLICATE_KEY")]
    assert rejects["hsbulk_message"][0].startswith("same record id as row 1")


def test_a_bad_choice_is_a_usage_error(tmp_path, capsys):
    source = write_csv(tmp_path / "c.csv", [["a@example.com", "A"]])
    with pytest.raises(SystemExit) as exit_:
        main(["import", str(source), "--object", "contacts", "--duplicates", "newest"])
    assert exit_.value.code == 2
    assert "--duplicates" in capsys.readouterr().err


ROWS, KEYS = 3000, 1000


def test_last_killed_and_resumed_sends_each_key_once_with_its_last_row(tmp_path):
    """Row i holds key i % 1000: only rows 2001-3000 are sent, in 10 batches; killed -9
    after 3 of them, the resumed run makes the same choices and finishes the rest."""
    rows = [[f"user{i % KEYS}@example.com", f"Name{i}"] for i in range(ROWS)]
    source = write_csv(tmp_path / "contacts.csv", rows)
    sandbox = StandaloneSandbox("--rate", "0", "--latency-ms", "40")
    try:
        env = {**os.environ, "HUBSPOT_ACCESS_TOKEN": sandbox.token}
        journal, summary = tmp_path / "job.db", tmp_path / "summary.json"
        command = [sys.executable, "-m", "engine", "import", str(source), "--object",
                   "contacts", "--id-property", "email", *MAPS, "--duplicates", "last",
                   "--concurrency", "1", "--base-url", sandbox.base_url, "--rate", "none",
                   "--quiet", "--checkpoint", str(journal), "--summary", str(summary),
                   "--results", str(tmp_path / "results.csv")]
        assert kill_at_progress(command, env, journal, [3]) == 1
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        result = orjson.loads(summary.read_bytes())
        assert result["resumed"] and result["balanced"]
        # (a batch that landed unseen before the kill is upserted again: "updated")
        assert (result["rows_read"], result["created"] + result["updated"],
                result["skipped"]) == (3000, 1000, 2000)
        stored = sandbox.get("/__sandbox/records/contacts")["results"]
        names = {r["properties"]["email"]: r["properties"]["firstname"] for r in stored}
        assert len(stored) == len(names) == KEYS
        assert names == {f"user{k}@example.com": f"Name{2000 + k}" for k in range(KEYS)}
        results = pl.read_csv(tmp_path / "results.csv", infer_schema=False)
        actions = results["action"].value_counts().rows()
        assert dict(actions)["skipped"] == 2000 and results.height == 3000
    finally:
        sandbox.stop()


def test_a_job_step_takes_duplicates(tmp_path, sandbox_env, capsys):
    sandbox = sandbox_env(rate_requests=None)
    write_csv(tmp_path / "c.csv", [["a@example.com", "Old"], ["A@example.com", "New"]])
    job = tmp_path / "job.toml"
    step = """[[steps]]
name = "people"
object = "contacts"
source = "c.csv"
id_property = "email"
map = { "Email" = "email", "First Name" = "firstname" }
duplicates = "{}"
"""
    job.write_text(step.replace("{}", "latest"))
    assert main(["run", str(job), "--base-url", sandbox.base_url, "--rate", "none"]) == 2
    assert "duplicates must be reject, first, last" in capsys.readouterr().err
    job.write_text(step.replace("{}", "last"))
    assert main(["run", str(job), "--base-url", sandbox.base_url, "--rate", "none",
                 "--quiet", "--checkpoint", str(tmp_path / "job.db")]) == 0
    assert names_by_email(sandbox) == {"a@example.com": "New"}


def test_the_key_pre_scan_spills_to_disk_and_decides_as_a_naive_scan(monkeypatch):
    """Bounded memory: keys go to disk in hash partitions, in several pieces; the rows
    dropped are exactly those a plain scan of the whole key column drops."""
    import random

    from engine.batch import KEY
    from engine.imports import dedupe
    from engine.source import SOURCE_ROW

    rng = random.Random(5)
    keys = [f" User{rng.randrange(3000)}@Example.org" for _ in range(5000)]
    frames = [pl.DataFrame({SOURCE_ROW: list(range(i + 1, i + 501)), KEY: keys[i:i + 500]})
              for i in range(0, 5000, 500)]
    folded = [k.strip().lower() for k in keys]
    firsts: dict[str, int] = {}
    lasts: dict[str, int] = {}
    for row, key in enumerate(folded, 1):
        firsts.setdefault(key, row)
        lasts[key] = row
    for spill_rows, policy, holder in ((700, "reject", firsts), (700, "first", firsts),
                                       (700, "last", lasts), (10**9, "reject", firsts),
                                       (10**9, "last", lasts)):
        monkeypatch.setattr(dedupe, "_SPILL_ROWS", spill_rows)  # 10**9: never on disk
        got = dedupe.dropped_rows(iter(frames), policy)
        expected = [(row, holder[key]) for row, key in enumerate(folded, 1)
                    if holder[key] != row]
        assert got.rows() == expected, (spill_rows, policy)


def test_the_same_input_with_another_duplicates_choice_is_a_new_run(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    source = two_files(tmp_path)
    assert run(tmp_path, sandbox, source)[0] == 1
    code, summary = run(tmp_path, sandbox, source, "--duplicates", "last")
    assert code == 0, summary  # not "already complete": the later rows are sent now
    assert (summary["updated"] + summary["unchanged"], summary["skipped"]) == (280, 20)
    assert names_by_email(sandbox)["user7@example.com"] == "Again7"


def test_the_dry_run_rejects_and_skips_duplicates_as_the_run_would(tmp_path, sandbox_env,
                                                                    capsys):
    sandbox = sandbox_env(rate_requests=None)
    source = write_csv(tmp_path / "d.csv", [["a@x.org", "A"], ["b@x.org", "B"],
                                            [" A@X.org", "C"]])
    rejects = tmp_path / "dry-rejects.csv"
    base = ["import", str(source), "--object", "contacts", "--id-property", "email", *MAPS,
            "--base-url", sandbox.base_url, "--dry-run", "--rejects", str(rejects)]
    assert main(base) == 1
    out = capsys.readouterr().out
    assert "Valid: 2   Rejected: 1" in out and "DUPLICATE_KEY" in out
    table = pl.read_csv(rejects, infer_schema=False)
    assert table.select("hsbulk_source_row", "hsbulk_code").rows() == [("3", "DUPLICATE_KEY")]
    assert table["hsbulk_message"][0].startswith("same email as row 1")
    assert main([*base, "--duplicates", "last"]) == 0  # row 1 skipped: not a reject
    assert "Valid: 2   Rejected: 0" in capsys.readouterr().out
    assert sandbox.records("contacts") == []
