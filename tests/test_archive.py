"""`hsbulk import --mode archive`: archive the records a file names, by id or by e-mail.

At the CLI against the sandbox: which records are archived, the results file (action
`archived`), the rejects (NOT_FOUND, bad ids) and the summary's counts.
"""

from pathlib import Path

import orjson
import polars as pl

from engine.cli import main
from tests.conftest import write_csv


def seed_contacts(tmp_path: Path, sandbox, n: int) -> dict[str, str]:
    """n contacts in the sandbox: e-mail -> record id."""
    source = write_csv(tmp_path / "seed.csv", ["Email", "First Name"],
                       [[f"user{i}@example.com", f"First{i}"] for i in range(n)])
    code = main(["import", str(source), "--object", "contacts", "--id-property", "email",
                 "--base-url", sandbox.base_url, "--rate", "none", "--quiet",
                 "--checkpoint", str(tmp_path / "seed.db")])
    assert code == 0
    return {r["properties"]["email"]: r["id"] for r in sandbox.records("contacts")}


def archive(tmp_path: Path, sandbox, source: Path, *extra: str) -> tuple[int, dict]:
    summary = tmp_path / "summary.json"
    code = main(["import", str(source), "--object", "contacts", "--mode", "archive",
                 "--base-url", sandbox.base_url, "--rate", "none", "--quiet",
                 "--checkpoint", str(tmp_path / "archive.db"), "--summary", str(summary),
                 "--results", str(tmp_path / "results.csv"),
                 "--rejects", str(tmp_path / "rejects.csv"), *extra])
    return code, orjson.loads(summary.read_bytes())


def live_emails(sandbox) -> set[str]:
    return {r["properties"]["email"] for r in sandbox.records("contacts")}


def test_archive_by_record_id(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    ids = seed_contacts(tmp_path, sandbox, 5)
    gone = ["user0@example.com", "user2@example.com", "user4@example.com"]
    rows = [[ids[e], "ignored", "whatever"] for e in gone] + [["999999", "x", "y"],
                                                              ["abc", "x", "y"]]
    source = write_csv(tmp_path / "archive.csv", ["Record ID", "First Name", "Unmapped"], rows)
    code, summary = archive(tmp_path, sandbox, source)
    assert code == 1
    assert (summary["rows_read"], summary["archived"], summary["rejected"]) == (5, 3, 2)
    assert summary["balanced"] and summary["mode"] == "archive"
    assert live_emails(sandbox) == {"user1@example.com", "user3@example.com"}
    archived = {r["properties"]["email"] for r in sandbox.records("contacts", archived=True)
                if r["archived"]}
    assert archived == set(gone)
    results = pl.read_csv(tmp_path / "results.csv", infer_schema=False)
    assert results.rows() == [(str(i + 1), ids[e], ids[e], "archived")
                              for i, e in enumerate(gone)]
    assert results.columns == ["source_row", "hs_object_id", "id", "action"]
    rejects = pl.read_csv(tmp_path / "rejects.csv", infer_schema=False)
    assert rejects.select("hsbulk_source_row", "hsbulk_column", "hsbulk_value",
                          "hsbulk_code").rows() == [
        ("4", "Record ID", "999999", "NOT_FOUND"), ("5", "Record ID", "abc", "INVALID_ID")]


def test_archive_by_email_reads_the_ids_and_rejects_unknown_keys(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    ids = seed_contacts(tmp_path, sandbox, 250)
    rows = [[f" USER{i}@example.com ", "x"] for i in range(0, 250, 2)]  # 125 records
    rows.insert(60, ["nobody@example.com", "x"])
    source = write_csv(tmp_path / "archive.csv", ["E-mail", "Phone Number"], rows)
    code, summary = archive(tmp_path, sandbox, source, "--id-property", "email",
                            "--map", "E-mail=email")
    assert code == 1
    assert (summary["rows_read"], summary["archived"], summary["rejected"]) == (126, 125, 1)
    assert summary["balanced"]
    assert live_emails(sandbox) == {f"user{i}@example.com" for i in range(1, 250, 2)}
    results = pl.read_csv(tmp_path / "results.csv", infer_schema=False)
    assert set(results["action"]) == {"archived"}
    first = results.row(0, named=True)
    assert (first["source_row"], first["id"]) == ("1", ids["user0@example.com"])
    rejects = pl.read_csv(tmp_path / "rejects.csv", infer_schema=False)
    assert rejects.select("hsbulk_source_row", "hsbulk_column", "hsbulk_value",
                          "hsbulk_code").rows() == [
        ("61", "E-mail", "nobody@example.com", "NOT_FOUND")]
    # Run again with a new journal: every key is gone now, nothing is archived twice.
    (tmp_path / "archive.db").unlink()
    code, summary = archive(tmp_path, sandbox, source, "--id-property", "email",
                            "--map", "E-mail=email")
    assert code == 1 and (summary["archived"], summary["rejected"]) == (0, 126)


def test_archive_by_a_property_that_is_not_unique_is_a_usage_error(tmp_path, sandbox_env,
                                                                     capsys):
    sandbox = sandbox_env(rate_requests=None)
    source = write_csv(tmp_path / "archive.csv", ["First Name"], [["Ann"]])
    code, _ = main(["import", str(source), "--object", "contacts", "--mode", "archive",
                    "--id-property", "firstname", "--base-url", sandbox.base_url,
                    "--rate", "none", "--quiet", "--checkpoint",
                    str(tmp_path / "a.db")]), None
    assert code == 2
    assert "hsbulk: error: id_property 'firstname' is not a unique-value property" in (
        capsys.readouterr().err)


def test_a_job_step_archives(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    seed_contacts(tmp_path, sandbox, 3)
    write_csv(tmp_path / "leavers.csv", ["Email", "Reason"], [["user1@example.com", "left"]])
    job = tmp_path / "job.toml"
    job.write_text("""[[steps]]
name = "leavers"
object = "contacts"
source = "leavers.csv"
mode = "archive"
id_property = "email"
""")
    summary = tmp_path / "job.json"
    assert main(["run", str(job), "--base-url", sandbox.base_url, "--rate", "none",
                 "--quiet", "--checkpoint", str(tmp_path / "job.db"),
                 "--summary", str(summary)]) == 0
    assert live_emails(sandbox) == {"user0@example.com", "user2@example.com"}
    assert orjson.loads(summary.read_bytes())["archived"] == 1
