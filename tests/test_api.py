"""The public Python API (`import engine`): acceptance script, typed results and errors,
frame inputs, sync wrappers, no signal handlers, cancellation that resumes exactly."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import anyio
import orjson
import polars as pl
import pytest

import engine
from tests import api_acceptance

SCRIPT = Path(api_acceptance.__file__)
EXPECTED = {
    "cancelled": True, "state": "done", "rows_read": 10_000, "written": 10_000,
    "rejected": 0, "records": 10_000, "emails": 10_000, "signals_unchanged_during_run": True,
    "export_state": "done", "export_records": 10_000, "export_rows": 10_000,
    "job_steps": [["companies", 2, 0], ["contacts", 2, 2]], "job_edges": 2,
    "signals_unchanged": True,
}


def check(seen: dict[str, object]) -> None:
    assert {k: seen[k] for k in EXPECTED} == EXPECTED
    assert 0 < int(seen["partial"]) < 10_000  # type: ignore[call-overload]


def test_acceptance_script_as_a_plain_python_process(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True,
                          text=True, timeout=120, cwd=SCRIPT.parent.parent)
    assert done.returncode == 0, done.stderr
    check(orjson.loads(done.stdout.strip().splitlines()[-1]))


def test_acceptance_script_inside_a_running_event_loop(tmp_path):
    async def notebook() -> dict[str, object]:  # a loop that runs before the API is called
        return await api_acceptance.main(tmp_path)

    check(asyncio.run(notebook()))


def test_public_names_are_sorted_and_importable():
    assert engine.__all__ == sorted(engine.__all__)
    assert all(hasattr(engine, name) for name in engine.__all__)


def test_a_changed_frame_under_an_unfinished_run_is_refused_and_a_stop_raises(tmp_path):
    frame = api_acceptance.contacts(300)

    async def go() -> None:
        async with engine.start_sandbox(daily_limit=2) as sandbox:
            conn = engine.Connection(sandbox.base_url, sandbox.token, rate=None)
            options = engine.ImportOptions(id_property="email")
            with pytest.raises(engine.Stopped) as stopped:
                await engine.import_frame(frame, "contacts", options, run_key="k",
                                          connection=conn, checkpoint=tmp_path / "j.db")
            partial = stopped.value.result
            assert isinstance(partial, engine.RunResult) and partial.resumable
            assert partial.counts.rows_read == 300 and partial.counts.rejected == 0
            changed = frame.with_columns(pl.col("firstname").str.to_lowercase())
            with pytest.raises(engine.CheckpointError):
                await engine.import_frame(changed, "contacts", options, run_key="k",
                                          connection=conn, checkpoint=tmp_path / "j.db")

    anyio.run(go)


def test_rejected_rows_are_data_with_their_original_fields(tmp_path):
    frame = pl.DataFrame({"email": ["a@example.com", "b@example.com"],
                          "hs_email_optout": ["yes", "perhaps"]})

    async def go() -> engine.RunResult:
        async with engine.start_sandbox() as sandbox:
            conn = engine.Connection(sandbox.base_url, sandbox.token, rate=None)
            return await engine.import_frame(
                frame, "contacts", engine.ImportOptions(id_property="email"), run_key="r",
                connection=conn, checkpoint=tmp_path / "r.db",
                rejects=tmp_path / "rejects.csv")

    result = anyio.run(go)
    assert result.state == engine.RunState.DONE_WITH_REJECTS
    assert (result.counts.created, result.counts.rejected) == (1, 1)
    rejects = pl.read_csv(tmp_path / "rejects.csv", infer_schema=False)
    assert rejects.select("hsbulk_source_row", "email", "hs_email_optout").rows() == [
        ("2", "b@example.com", "perhaps")]


def test_sync_wrappers_refuse_a_running_loop(tmp_path):
    async def inside() -> None:
        with pytest.raises(engine.ConfigError, match=r"await engine\.import_file"):
            engine.import_file_sync(tmp_path / "x.csv", "contacts")

    asyncio.run(inside())


def test_sync_wrapper_in_a_plain_script(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    (tmp_path / "c.csv").write_text("email,firstname\nx@example.com,X\n")
    result = engine.import_file_sync(
        tmp_path / "c.csv", "contacts", engine.ImportOptions(id_property="email"),
        connection=engine.Connection(sandbox.base_url, rate=None),
        checkpoint=tmp_path / "c.db", summary=tmp_path / "summary.json")
    assert result.state == "done" and result.counts.created == 1
    assert orjson.loads((tmp_path / "summary.json").read_bytes())["created"] == 1
    with pytest.raises(engine.ConfigError):  # bad calls are ConfigError, no SystemExit
        engine.import_file_sync(tmp_path / "c.csv", "contacts",
                                engine.ImportOptions(mode="upsert"),
                                connection=engine.Connection(sandbox.base_url, rate=None),
                                checkpoint=tmp_path / "d.db")
