"""SIGKILL an export at random moments, re-run each time: exactly the sandbox's records and
edges in the end, no duplicates, no orphan or half-written part files."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import polars as pl
import pytest

from tests.conftest import StandaloneSandbox
from tests.test_exporter import Seeder, contact
from tests.test_kill import kill_at_progress

ROWS = 20_000
ROWS_PER_PART = 500
KILLS = 10


def written_parts(journal: Path) -> int:
    if not journal.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("select count(*) from export_parts").fetchone()[0]
    except sqlite3.Error:
        return 0


async def seed(sandbox: StandaloneSandbox) -> None:
    async with Seeder(sandbox.base_url, sandbox.token) as seeder:
        await seeder.properties()
        companies = await seeder.create("companies", [
            {"properties": {"name": f"Co {i}", "domain": f"co{i}.example"}}
            for i in range(200)])
        await seeder.create("contacts", [contact(i, companies) for i in range(ROWS)])


@pytest.mark.timeout(600)
def test_killed_export_resumes_exactly_once(tmp_path):
    sandbox = StandaloneSandbox("--rate", "0", "--search-rate", "0", "--latency-ms", "2")
    try:
        asyncio.run(seed(sandbox))
        out = tmp_path / "out"
        journal = tmp_path / "export.db"
        command = [sys.executable, "-m", "engine", "export", "contacts", "--out", str(out),
                   "--base-url", sandbox.base_url, "--rate", "none", "--search-rate", "none",
                   "--partitions", "2", "--rows-per-part", str(ROWS_PER_PART),
                   "--associations", "companies", "--checkpoint", str(journal),
                   "--summary", str(tmp_path / "summary.json")]
        env = {**os.environ, "HUBSPOT_ACCESS_TOKEN": sandbox.token}
        # Record parts and edge parts: about 2 * ROWS / ROWS_PER_PART journal rows.
        rng = random.Random(7)
        thresholds = sorted(rng.sample(range(1, 2 * ROWS // ROWS_PER_PART - 2), KILLS))
        killed = kill_at_progress(command, env, journal, thresholds, written_parts)
        assert killed >= KILLS - 2
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        summary = orjson.loads((tmp_path / "summary.json").read_bytes())
        assert summary["resumed"] and summary["records"] == ROWS

        want_ids = {int(r["id"]) for r in sandbox.get("/__sandbox/records/contacts")["results"]}
        want_edges = sorted(
            (int(e["fromId"]), int(e["toId"]), e["typeId"])
            for e in sandbox.get("/__sandbox/associations/contacts/companies")["results"])
    finally:
        sandbox.stop()

    leftovers = [p for p in out.rglob(".*") if ".tmp-" in p.name]
    assert leftovers == []
    files = sorted((out / "contacts").glob("part-*.parquet"))
    frames = [pl.read_parquet(f) for f in files]  # every part readable
    ids = pl.concat(frames)["id"]
    assert ids.len() == ROWS and ids.n_unique() == ROWS and set(ids.to_list()) == want_ids
    edge_frames = [pl.read_parquet(f) for f in sorted(
        (out / "contacts__companies").glob("part-*.parquet"))]
    edges = pl.concat(edge_frames).select("from_id", "to_id", "type_id")
    got = [tuple(r) for r in edges.iter_rows()]
    assert len(got) == len(set(got)) and sorted(got) == want_edges
    manifest = orjson.loads((out / "_manifest.json").read_bytes())
    listed = {f["path"] for f in manifest["files"]}
    assert listed == {str(p.relative_to(out)) for p in out.glob("*/part-*")}
