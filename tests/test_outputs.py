"""Every file hsbulk writes goes through one atomic writer: inputs are never overwritten,
`-` is stdout, pipes and symlinks are written in place, files are private whatever the
umask, CSV formulas are escaped, a fixed rejects file imports again, results carry the key,
and an incremental export into the same folder keeps the earlier parts."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import orjson
import polars as pl
import pytest

from engine.cli import main
from engine.errors import ConfigError
from engine.mapping import MappingSpec, resolve_mapping
from tests.test_importer import HEADER, MAPS, contacts, write_csv
from tests.test_mapping import SCHEMA

UPSERT = ["--object", "contacts", "--mode", "upsert", "--id-property", "email", *MAPS]


def imports(sandbox, source: Path, checkpoint: Path, *extra: str) -> int:
    return main(["import", str(source), *UPSERT, "--base-url", sandbox.base_url,
                 "--rate", "none", "--checkpoint", str(checkpoint), *extra])


def with_bad_stages(n: int, bad: dict[int, str] | None = None) -> list[list[str]]:
    """`n` contacts; rows whose index is in `bad` get that First Name and an unknown stage."""
    rows = contacts(n)
    for i, first in (bad or {}).items():
        rows[i][1], rows[i][3] = first, "Nonsense Stage"
    return rows


# -- an output is never an input ------------------------------------------------------------


@pytest.mark.parametrize(("flag", "alias"), [
    ("--rejects", "same"), ("--results", "symlink"), ("--summary", "relative"),
    ("--emit-normalized", "same"), ("--rejects", "glob")])
def test_an_output_naming_an_input_is_refused_before_anything_is_sent(
        tmp_path, sandbox_env, monkeypatch, capsys, flag, alias):
    sandbox = sandbox_env(rate_requests=None)
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "in"
    folder.mkdir()
    source = write_csv(folder / "contacts.csv", HEADER, with_bad_stages(3, {1: "X"}))
    before = source.read_bytes()
    target = {"same": str(source), "relative": "./in/../in/contacts.csv",
              "glob": str(folder / "rejects.csv")}.get(alias)
    if alias == "symlink":
        (tmp_path / "link.csv").symlink_to(source)
        target = str(tmp_path / "link.csv")
    given = str(folder / "*.csv") if alias == "glob" else str(source)
    extra = ["--dry-run"] if flag == "--emit-normalized" else []
    code = main(["import", given, *UPSERT, "--base-url", sandbox.base_url, "--rate", "none",
                 "--checkpoint", str(tmp_path / "cp.db"), "--quiet", flag, str(target),
                 *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("hsbulk: error: output ") and "Traceback" not in err
    assert source.read_bytes() == before
    assert not (folder / "rejects.csv").exists()
    assert sandbox.audit()["requests"] == 0  # refused before the first call


def test_two_outputs_on_one_file_are_refused(tmp_path, sandbox_env, capsys):
    sandbox = sandbox_env(rate_requests=None)
    source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(2))
    same = str(tmp_path / "out.csv")
    code = imports(sandbox, source, tmp_path / "cp.db", "--quiet", "--results", same,
                   "--rejects", same)
    assert code == 2 and "are the same file" in capsys.readouterr().err
    assert sandbox.audit()["requests"] == 0


def test_a_job_summary_naming_a_step_source_is_refused(tmp_path, sandbox_env, capsys):
    sandbox = sandbox_env(rate_requests=None)
    source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(3))
    before = source.read_bytes()
    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "j"\n\n[[steps]]\nname = "contacts"\nobject = "contacts"\n'
                   'source = "contacts.csv"\nid_property = "email"\n[steps.map]\n'
                   '"Email" = "email"\n"First Name" = "firstname"\n')
    code = main(["run", str(job), "--base-url", sandbox.base_url, "--rate", "none",
                 "--checkpoint", str(tmp_path / "j.db"), "--quiet", "--summary", str(source)])
    assert code == 2 and "hsbulk: error: output" in capsys.readouterr().err
    assert source.read_bytes() == before
    assert sandbox.records("contacts") == []


# -- stdout, pipes, symlinks ------------------------------------------------------------------


def test_summary_dash_is_json_on_stdout_and_the_table_on_stderr(tmp_path, sandbox_env,
                                                                 monkeypatch, capsys):
    sandbox = sandbox_env(rate_requests=None)
    monkeypatch.chdir(tmp_path)
    source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(3))
    assert imports(sandbox, source, tmp_path / "cp.db", "--summary", "-") == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert (summary["rows_read"], summary["created"]) == (3, 3)
    assert "hsbulk summary" in err
    assert not (tmp_path / "-").exists()


def test_results_dash_is_csv_on_stdout(tmp_path, sandbox_env, monkeypatch, capsys):
    sandbox = sandbox_env(rate_requests=None)
    monkeypatch.chdir(tmp_path)
    source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(3))
    assert imports(sandbox, source, tmp_path / "cp.db", "--results", "-") == 0
    out, err = capsys.readouterr()
    results = pl.read_csv(out.encode(), infer_schema=False)
    assert results["email"].to_list() == [f"user{i}@example.com" for i in range(3)]
    assert "hsbulk summary" in err and not (tmp_path / "-").exists()


def test_a_fifo_is_written_in_place_and_a_symlink_target_replaced(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    source = write_csv(tmp_path / "contacts.csv", HEADER, with_bad_stages(3, {2: "X"}))
    fifo = tmp_path / "summary.pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def read_pipe() -> None:
        with fifo.open("rb") as pipe:
            got.append(pipe.read())

    reader = threading.Thread(target=read_pipe, daemon=True)
    reader.start()
    target = tmp_path / "kept" / "rejects.csv"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "rejects.csv"
    link.symlink_to(target)
    code = imports(sandbox, source, tmp_path / "cp.db", "--quiet", "--summary", str(fifo),
                   "--rejects", str(link))
    reader.join(10)
    assert code == 1
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert got and json.loads(got[0])["rejected"] == 1
    assert link.is_symlink() and link.resolve() == target
    assert pl.read_csv(target)["hsbulk_source_row"].to_list() == [3]


# -- permissions ------------------------------------------------------------------------------


def test_outputs_are_private_whatever_the_umask(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    source = write_csv(tmp_path / "contacts.csv", HEADER, with_bad_stages(3, {0: "X"}))
    out = tmp_path / "out"
    old = os.umask(0)
    try:
        assert imports(sandbox, source, tmp_path / "cp.db", "--quiet",
                       "--results", str(out / "run" / "results.csv"),
                       "--rejects", str(out / "run" / "rejects.parquet"),
                       "--summary", str(out / "summary" / "s.json")) == 1
        assert main(["import", str(source), *UPSERT, "--base-url", sandbox.base_url,
                     "--quiet", "--dry-run", "--rejects", str(out / "dry" / "r.csv"),
                     "--emit-normalized", str(out / "dry" / "n.parquet")]) == 1
    finally:
        os.umask(old)
    files = ["run/results.csv", "run/rejects.parquet", "summary/s.json", "dry/r.csv",
             "dry/n.parquet"]
    modes = {name: oct(os.stat(out / name).st_mode & 0o777) for name in files}
    assert modes == dict.fromkeys(files, "0o600")
    folders = [out, out / "run", out / "summary", out / "dry"]
    modes = {str(f): oct(os.stat(f).st_mode & 0o777) for f in folders}
    assert modes == dict.fromkeys(map(str, folders), "0o700")
    assert sorted(p.name for p in (out / "run").iterdir()) == ["rejects.parquet",
                                                                "results.csv"]


# -- formulas ---------------------------------------------------------------------------------


FORMULAS = ['=HYPERLINK("http://x","y")', "@SUM(A1)", "+1-1", "-2", "\tx", "\rx", "\nx"]


@pytest.mark.parametrize("dry_run", [False, True])
def test_formula_looking_values_are_escaped_in_csv_rejects_and_raw_in_parquet(
        tmp_path, sandbox_env, dry_run):
    sandbox = sandbox_env(rate_requests=None)
    rows = with_bad_stages(len(FORMULAS) + 1, dict(enumerate(FORMULAS)))
    source = write_csv(tmp_path / "contacts.csv", HEADER, rows)
    flags = ["--dry-run"] if dry_run else []
    for name in ("r.csv", "r.parquet"):
        assert imports(sandbox, source, tmp_path / f"{name}.db", "--quiet", *flags,
                       "--rejects", str(tmp_path / name)) == 1
    escaped = pl.read_csv(tmp_path / "r.csv", infer_schema=False)
    assert escaped["First Name"].to_list() == ["'" + v for v in FORMULAS]
    assert set(escaped["hsbulk_value"]) == {"Nonsense Stage"}
    raw = pl.read_parquet(tmp_path / "r.parquet")
    assert raw["First Name"].to_list() == FORMULAS


# -- rejects import again; results carry the key ----------------------------------------------


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_fixed_rejects_file_imports_again_with_the_same_flags(tmp_path, sandbox_env,
                                                                 dry_run):
    sandbox = sandbox_env(rate_requests=None)
    source = write_csv(tmp_path / "contacts.csv", HEADER, with_bad_stages(6, {1: "B", 4: "E"}))
    flags = [*UPSERT, "--strict-columns", "--base-url", sandbox.base_url, "--rate", "none",
             "--quiet"]
    rejects = tmp_path / "rej.csv"
    code = main(["import", str(source), *flags, "--checkpoint", str(tmp_path / "1.db"),
                 "--rejects", str(rejects), *(["--dry-run"] if dry_run else [])])
    assert code == 1
    table = pl.read_csv(rejects, infer_schema=False)
    assert table["hsbulk_code"].to_list() == ["INVALID_OPTION", "INVALID_OPTION"]
    table.with_columns(pl.lit("Lead").alias("Lifecycle Stage")).write_csv(rejects)
    code = main(["import", str(rejects), *flags, "--checkpoint", str(tmp_path / "2.db"),
                 "--rejects", str(tmp_path / "rej2.csv")])
    assert code == 0
    stored = {r["properties"]["email"]: r["properties"] for r in sandbox.records("contacts")}
    for i, first in ((1, "B"), (4, "E")):
        assert stored[f"user{i}@example.com"]["firstname"] == first
        assert stored[f"user{i}@example.com"]["lifecyclestage"] == "lead"
    assert "hsbulk_message" not in stored["user1@example.com"]


def test_an_explicit_map_of_an_hsbulk_column_is_a_config_error():
    headers = ["Email", "hsbulk_value", "hsbulk_message"]
    got = resolve_mapping(MappingSpec(strict_columns=True), headers, SCHEMA)
    assert [t.column for t in got.targets] == ["Email"] and got.unmapped == ()
    with pytest.raises(ConfigError, match="'hsbulk_value' is hsbulk's own"):
        resolve_mapping(MappingSpec.from_flags(["hsbulk_value=firstname"]), headers, SCHEMA)


def test_results_carry_the_natural_key(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(150))
    results = tmp_path / "results.csv"
    assert imports(sandbox, source, tmp_path / "cp.db", "--quiet", "--results",
                   str(results)) == 0
    table = pl.read_csv(results, infer_schema=False)
    assert table.columns == ["source_row", "email", "id", "action"]
    ids = {r["properties"]["email"]: r["id"] for r in sandbox.records("contacts")}
    assert dict(zip(table["email"], table["id"], strict=True)) == ids
    assert table.filter(pl.col("source_row") == "8")["email"].to_list() == [
        "user7@example.com"]


# -- export into the same folder --------------------------------------------------------------


def exports(sandbox, out: Path, *extra: str) -> int:
    return main(["export", "contacts", "--out", str(out), "--format", "csv",
                 "--properties", "email,firstname", "--base-url", sandbox.base_url,
                 "--rate", "none", "--search-rate", "none", "--quiet", *extra])


def parts_on_disk(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in out.glob("*/part-*")}


def test_an_incremental_export_into_the_same_folder_keeps_the_earlier_parts(tmp_path,
                                                                            sandbox_env):
    sandbox = sandbox_env(rate_requests=None, search_rate_per_s=None)
    source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(5))
    assert imports(sandbox, source, tmp_path / "1.db", "--quiet") == 0
    out = tmp_path / "out"
    assert exports(sandbox, out) == 0
    first = parts_on_disk(out)
    assert first
    changed = [["user1@example.com", "Changed1", "Last1", "Lead"],
               ["user3@example.com", "Changed3", "Last3", "Lead"]]
    update = write_csv(tmp_path / "update.csv", HEADER, changed)
    assert imports(sandbox, update, tmp_path / "2.db", "--quiet") == 0

    assert exports(sandbox, out, "--since-manifest", str(out)) == 0
    second = parts_on_disk(out)
    assert {name: second[name] for name in first} == first  # kept, untouched
    new = sorted(set(second) - set(first))
    assert new and min(new) > max(first)  # numbered after the earlier parts
    frames = [pl.read_csv(out / name, infer_schema=False).with_columns(pl.lit(name).alias("part"))
              for name in sorted(second)]
    latest = pl.concat(frames).sort("part").group_by("id").last()
    assert latest.height == 5
    names = dict(zip(latest["email"], latest["firstname"], strict=True))
    assert (names["user1@example.com"], names["user3@example.com"]) == ("Changed1", "Changed3")
    manifest = orjson.loads((out / "_manifest.json").read_bytes())
    assert {f["path"] for f in manifest["files"]} == set(second)
    assert manifest["records"] == sum(f.height for f in frames)
    assert len(manifest["runs"]) == 2

    assert exports(sandbox, out) == 0  # a full export again: a new snapshot
    third = parts_on_disk(out)
    assert not set(third) & set(second)
    assert pl.concat(pl.read_csv(out / n, infer_schema=False) for n in third).height == 5
    manifest = orjson.loads((out / "_manifest.json").read_bytes())
    assert {f["path"] for f in manifest["files"]} == set(third)
    assert manifest["records"] == 5 and len(manifest["runs"]) == 1


def test_a_formula_looking_value_round_trips_through_a_fixed_rejects_file(tmp_path,
                                                                          sandbox_env):
    """The rejects CSV shows `'+1 555` (safe in a spreadsheet); importing it again sends
    `+1 555`, the value of the original file."""
    sandbox = sandbox_env(rate_requests=None)
    rows = with_bad_stages(3, {1: "=HYPERLINK(1)"})
    rows[1][2] = "+1 555 0100"
    source = write_csv(tmp_path / "contacts.csv", HEADER, rows)
    flags = [*UPSERT, "--base-url", sandbox.base_url, "--rate", "none", "--quiet"]
    rejects = tmp_path / "rej.csv"
    assert main(["import", str(source), *flags, "--checkpoint", str(tmp_path / "1.db"),
                 "--rejects", str(rejects)]) == 1
    table = pl.read_csv(rejects, infer_schema=False)
    assert table["Last Name"].to_list() == ["'+1 555 0100"]
    table.with_columns(pl.lit("Lead").alias("Lifecycle Stage")).write_csv(rejects)
    assert main(["import", str(rejects), *flags, "--checkpoint", str(tmp_path / "2.db")]) == 0
    stored = {r["properties"]["email"]: r["properties"] for r in sandbox.records("contacts")}
    assert stored["user1@example.com"]["lastname"] == "+1 555 0100"
    assert stored["user1@example.com"]["firstname"] == "=HYPERLINK(1)"
