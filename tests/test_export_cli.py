"""`hsbulk export` end to end: the demo's data back out, through the CLI."""

import polars as pl

from engine.cli import main
from tests.test_job import SAMPLES


def test_export_command_writes_every_record_and_edge(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None, search_rate_per_s=None)
    assert main(["run", str(SAMPLES / "demo.toml"), "--base-url", sandbox.base_url,
                 "--rate", "none", "--quiet", "--checkpoint", str(tmp_path / "demo.db")]) == 1
    out = tmp_path / "out"
    code = main(["export", "contacts", "--out", str(out), "--associations", "companies",
                 "--properties", "email,firstname,date_of_birth,hs_buying_role",
                 "--base-url", sandbox.base_url, "--rate", "none", "--search-rate", "none",
                 "--quiet", "--checkpoint", str(tmp_path / "export.db")])
    assert code == 0
    records = pl.read_parquet(out / "contacts" / "*.parquet")
    stored = {r["id"] for r in sandbox.records("contacts")}
    assert records.height == len(stored)
    assert set(records["id"].cast(pl.String)) == stored
    assert records.schema["date_of_birth"] == pl.Date
    edges = pl.read_parquet(out / "contacts__companies" / "*.parquet")
    want = {(e["fromId"], e["toId"], e["typeId"]) for e in sandbox.edges("contacts",
                                                                        "companies")}
    got = set(zip(edges["from_id"].cast(pl.String), edges["to_id"].cast(pl.String),
                  edges["type_id"], strict=True))
    assert {(a, b, int(t)) for a, b, t in got} == want
    assert edges.height == len(want)
    assert (out / "_manifest.json").exists()
