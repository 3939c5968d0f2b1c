"""Journals a scheduler can trust: nightly re-runs, `--restart`, `hsbulk status`, and
`--checkpoint` paths that are not journals. Everything through the CLI, against a sandbox."""

import os
import sqlite3
import stat
from pathlib import Path

import orjson
import pytest

from engine.cli import main
from engine.journal import SqliteCheckpoint

HEADER = "Email,First Name\n"
MAPS = ["--map", "Email=email", "--map", "First Name=firstname"]
JOB = """
[job]
name = "nightly"

[[steps]]
name = "companies"
object = "companies"
source = "companies.csv"
id_property = "domain"
[steps.map]
"Website" = "domain"
"Company Name" = "name"

[[steps]]
name = "contacts"
object = "contacts"
source = "contacts.csv"
id_property = "email"
[steps.map]
"Email" = "email"
[[steps.associations]]
to = "companies"
column = "Company"
key = "domain"
"""


def write_contacts(path: Path, names: list[str]) -> Path:
    path.write_text(HEADER + "".join(f"{n}@example.com,{n.title()}\n" for n in names))
    return path


def hsbulk(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def nightly_import(capsys, sandbox, source: Path, *extra: str) -> tuple[int, dict, str]:
    """The scheduler's command line: the same every night, no --checkpoint."""
    summary = source.parent / "summary.json"
    summary.unlink(missing_ok=True)
    code, _, err = hsbulk(capsys, "import", str(source), "--object", "contacts", "--mode",
                          "upsert", "--id-property", "email", *MAPS, "--base-url",
                          sandbox.base_url, "--rate", "none", "--quiet", "--summary",
                          str(summary), *extra)
    return code, orjson.loads(summary.read_bytes()) if summary.exists() else {}, err


def status(capsys, *argv: str) -> list[dict]:
    code, out, err = hsbulk(capsys, "status", *argv, "--json")
    assert code == 0, err
    return orjson.loads(out)


def calls(sandbox) -> int:
    return sandbox.audit()["requests"]


def test_a_nightly_file_runs_again_only_when_its_content_changes(
        tmp_path, sandbox_env, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sandbox = sandbox_env(rate_requests=None)
    source = write_contacts(tmp_path / "contacts.csv", ["ann", "bob", "cy"])

    code, first, _ = nightly_import(capsys, sandbox, source)
    assert code == 0 and first["created"] == 3

    write_contacts(source, ["dee", "eve", "fay", "gus"])  # the next night's file
    code, second, err = nightly_import(capsys, sandbox, source)
    assert code == 0, err
    assert (second["rows_read"], second["created"], second["resumed"]) == (4, 4, False)
    assert len(sandbox.records("contacts")) == 7

    write_contacts(source, ["dee", "eve", "fay", "gus"])  # downloaded again: same bytes
    before = calls(sandbox)
    code, third, err = nightly_import(capsys, sandbox, source)
    assert code == 0
    assert "already complete" in err
    assert calls(sandbox) == before  # not even the property schema
    assert third == second  # the original summary

    journals = status(capsys)  # default folder: .hsbulk/
    assert [(j["command"], j["name"], j["state"], j["rows_read"], j["created"])
            for j in journals] == [("import", "contacts", "done", 3, 3),
                                   ("import", "contacts", "done", 4, 4)]
    first_input, second_input = (j["inputs"][0] for j in journals)
    assert first_input["path"] == second_input["path"] == str(source)
    assert first_input["fingerprint"] != second_input["fingerprint"]
    assert len(first_input["fingerprint"]) == 12


def test_a_finished_run_keeps_its_exit_code_when_run_again(tmp_path, sandbox_env, capsys):
    sandbox = sandbox_env(rate_requests=None)
    source = tmp_path / "contacts.csv"
    source.write_text(HEADER + "ann@example.com,Ann\nnot-an-email,Bob\n")
    code, summary, _ = nightly_import(capsys, sandbox, source, "--checkpoint",
                                      str(tmp_path / "cp" / "contacts.db"))
    assert code == 1 and summary["rejected"] == 1
    before = calls(sandbox)
    code, again, err = nightly_import(capsys, sandbox, source, "--checkpoint",
                                      str(tmp_path / "cp" / "contacts.db"))
    assert code == 1 and "already complete" in err and again == summary
    assert calls(sandbox) == before


def test_an_unfinished_run_of_a_changed_input_is_refused_until_restart(
        tmp_path, sandbox_env, capsys):
    sandbox = sandbox_env(rate_requests=None, daily_limit=2)
    source = write_contacts(tmp_path / "contacts.csv", [f"p{i}" for i in range(250)])
    journal = tmp_path / "cp" / "contacts.db"
    code, summary, _ = nightly_import(capsys, sandbox, source, "--checkpoint", str(journal))
    assert code == 4 and 0 < summary["created"] < 250
    [unfinished] = status(capsys, str(journal))
    assert unfinished["state"] == "interrupted"

    write_contacts(source, [f"q{i}" for i in range(5)])
    sandbox.configure(daily_limit=None)
    before = calls(sandbox)
    code, _, err = nightly_import(capsys, sandbox, source, "--checkpoint", str(journal))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("hsbulk: error: ") and "--restart" in err
    assert calls(sandbox) == before

    code, summary, err = nightly_import(capsys, sandbox, source, "--checkpoint", str(journal),
                                        "--restart")
    assert code == 0, err
    assert (summary["rows_read"], summary["created"]) == (5, 5)
    assert {r["properties"]["email"] for r in sandbox.records("contacts")} >= {
        f"q{i}@example.com" for i in range(5)}

    journals = {j["state"]: j for j in status(capsys, str(journal.parent))}
    assert set(journals) == {"abandoned", "done"}
    assert journals["done"]["path"] == str(journal)
    assert journals["abandoned"]["created"] == unfinished["created"]  # still readable


def test_a_finished_job_with_unchanged_inputs_is_already_complete(
        tmp_path, sandbox_env, capsys):
    sandbox = sandbox_env(rate_requests=None)
    (tmp_path / "companies.csv").write_text("Company Name,Website\nAcme,acme.example\n")
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("Email,Company\nann@example.com,acme.example\n")
    job = tmp_path / "job.toml"
    job.write_text(JOB)
    summary = tmp_path / "summary.json"
    command = ["run", str(job), "--base-url", sandbox.base_url, "--rate", "none", "--quiet",
               "--summary", str(summary)]
    code, _, err = hsbulk(capsys, *command)
    assert code == 0, err
    first = orjson.loads(summary.read_bytes())
    assert first["steps"][1]["associations"] == 1

    before = calls(sandbox)
    code, _, err = hsbulk(capsys, *command)
    assert code == 0 and "already complete" in err
    assert calls(sandbox) == before
    assert orjson.loads(summary.read_bytes()) == first

    contacts.write_text("Email,Company\nann@example.com,acme.example\n"
                        "bo@example.com,acme.example\n")
    code, _, err = hsbulk(capsys, *command)
    assert code == 0, err
    assert orjson.loads(summary.read_bytes())["steps"][1]["rows_read"] == 2
    journals = status(capsys, str(tmp_path / ".hsbulk"))
    assert [(j["command"], j["name"], j["steps"], j["state"]) for j in journals] == [
        ("run", "nightly", ["companies", "contacts"], "done")] * 2


def test_status_tells_running_from_interrupted_and_lists_exports(
        tmp_path, sandbox_env, capsys):
    sandbox = sandbox_env(rate_requests=None, search_rate_per_s=None, daily_limit=2)
    source = write_contacts(tmp_path / "contacts.csv", [f"p{i}" for i in range(250)])
    journal = tmp_path / "state" / "contacts.db"
    code, summary, _ = nightly_import(capsys, sandbox, source, "--checkpoint", str(journal))
    assert code == 4
    [info] = status(capsys, str(journal))
    assert (info["state"], info["created"], info["rows_read"]) == (
        "interrupted", summary["created"], summary["created"])

    held = SqliteCheckpoint(journal)  # as a live run does, this holds the journal's lock
    try:
        assert status(capsys, str(journal))[0]["state"] == "running"
        code, _, err = nightly_import(capsys, sandbox, source, "--checkpoint", str(journal))
        assert code == 2 and "in use" in err
    finally:
        held.close()
    assert status(capsys, str(journal))[0]["state"] == "interrupted"
    code, table, _ = hsbulk(capsys, "status", str(journal))
    assert code == 0
    assert "contacts.db" in table and "interrupted" in table and "contacts.csv" in table

    sandbox.configure(daily_limit=None)
    out = tmp_path / "out"
    code, _, err = hsbulk(capsys, "export", "contacts", "--out", str(out), "--base-url",
                          sandbox.base_url, "--rate", "none", "--search-rate", "none",
                          "--quiet")
    assert code == 0, err
    [export] = status(capsys, str(out / ".hsbulk"))
    assert (export["command"], export["name"], export["state"]) == ("export", "contacts",
                                                                     "done")
    assert export["rows_read"] == len(sandbox.records("contacts"))


def test_status_of_a_path_that_is_not_a_journal_is_exit_2(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    for path in (notes, tmp_path / "missing"):
        code, out, err = hsbulk(capsys, "status", str(path))
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and err.startswith("hsbulk: error: ")


def plain_file(path: Path) -> None:
    path.write_text("my own notes\n")


def other_database(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("create table meta (key text, value text)")
    db.execute("insert into meta values ('owner', 'someone else')")
    db.commit()
    db.close()


@pytest.mark.parametrize("make", [plain_file, other_database])
@pytest.mark.parametrize("command", ["import", "export"])
def test_a_checkpoint_that_is_not_a_journal_is_left_untouched(
        tmp_path, sandbox_env, capsys, make, command):
    sandbox = sandbox_env(rate_requests=None)
    target = tmp_path / "precious.db"
    make(target)
    os.chmod(target, 0o644)
    before = target.read_bytes()
    source = write_contacts(tmp_path / "contacts.csv", ["ann"])
    argv = (["import", str(source), "--object", "contacts", "--id-property", "email", *MAPS]
            if command == "import" else ["export", "contacts", "--out", str(tmp_path / "o")])
    calls_before = calls(sandbox)
    code, _, err = hsbulk(capsys, *argv, "--checkpoint", str(target), "--base-url",
                          sandbox.base_url, "--quiet")
    assert code == 2
    assert err.count("\n") == 1 and "not an hsbulk journal" in err
    assert target.read_bytes() == before
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("precious")) == [
        "precious.db"]
    if command == "import":
        assert calls(sandbox) == calls_before


def test_a_directory_or_a_path_inside_a_file_is_refused(tmp_path, sandbox_env, capsys):
    sandbox = sandbox_env(rate_requests=None)
    source = write_contacts(tmp_path / "contacts.csv", ["ann"])
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o755)
    inside = source / "journal.db"
    for checkpoint in (folder, inside):
        code, _, err = nightly_import(capsys, sandbox, source, "--checkpoint", str(checkpoint))
        assert code == 2, err
        assert err.count("\n") == 1 and err.startswith("hsbulk: error: ")
        assert "Traceback" not in err
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o755 and not list(folder.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contacts.csv", "folder"]
