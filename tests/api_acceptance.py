"""The issue's acceptance script: only documented `engine` names, run as a plain `python`
process (`python tests/api_acceptance.py DIR`) and, by tests/test_api.py, inside an event
loop that is already running (as a notebook would). Prints one JSON line of what it saw."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import anyio
import orjson
import polars as pl

import engine

ROWS = 10_000
JOB = """
[job]
name = "two-steps"
[[steps]]
name = "companies"
object = "companies"
source = "companies.csv"
id_property = "domain"
[[steps]]
name = "contacts"
object = "contacts"
source = "contacts.csv"
id_property = "email"
[[steps.associations]]
to = "companies"
column = "company"
key = "domain"
"""


def contacts(rows: int) -> pl.DataFrame:
    return pl.DataFrame({"email": [f"p{i}@example.com" for i in range(rows)],
                         "firstname": [f"P{i}" for i in range(rows)],
                         "age": list(range(rows))})  # typed columns are sent as text


class CancelAfter:
    """A progress sink that cancels the host's scope once `rows` rows are settled (what an
    orchestrator's task cancellation does), and checks that no signal handler appeared."""

    def __init__(self, scope: anyio.CancelScope, rows: int) -> None:
        self.scope, self.rows = scope, rows
        self.handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        self.unchanged = True

    def start(self, description: str, total: int | None, done_before: int = 0,
              unit: str = "rows") -> None:
        pass

    def update(self, *, done: int, **_: object) -> None:
        self.unchanged &= all(signal.getsignal(s) == h for s, h in self.handlers.items())
        if done >= self.rows:
            self.scope.cancel()

    def update_export(self, **_: object) -> None:
        pass

    def stop(self) -> None:
        pass


async def main(folder: Path) -> dict[str, object]:
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    seen: dict[str, object] = {}
    async with engine.start_sandbox() as sandbox:
        conn = engine.Connection(sandbox.base_url, sandbox.token, rate=None)
        options = engine.ImportOptions(id_property="email")
        frame = contacts(ROWS)

        # Cancelled by the host mid-way, then run again: exact counts, no duplicates.
        with anyio.CancelScope() as scope:
            sink = CancelAfter(scope, 2_000)
            await engine.import_frame(frame, "contacts", options, run_key="nightly",
                                      connection=conn, checkpoint=folder / "frame.db",
                                      progress=sink)
        seen["cancelled"] = scope.cancelled_caught
        seen["partial"] = len(sandbox.records("contacts"))
        result = await engine.import_frame(frame, "contacts", options, run_key="nightly",
                                           connection=conn, checkpoint=folder / "frame.db",
                                           results=folder / "results.csv")
        seen["state"] = str(result.state)
        seen["rows_read"] = result.counts.rows_read
        seen["written"] = result.counts.created + result.counts.updated
        seen["rejected"] = result.counts.rejected
        seen["records"] = len(sandbox.records("contacts"))
        seen["emails"] = len({r["properties"]["email"] for r in sandbox.records("contacts")})
        seen["signals_unchanged_during_run"] = sink.unchanged

        exported = await engine.export_objects("contacts", folder / "out", connection=conn,
                                               properties=["email"], partitions=2)
        parts = sorted((folder / "out" / "contacts").glob("part-*.parquet"))
        seen["export_state"] = str(exported.state)
        seen["export_records"] = exported.records
        seen["export_rows"] = sum(pl.read_parquet(p).height for p in parts)

        pl.DataFrame({"domain": ["a.example.com", "b.example.com"],
                      "name": ["A", "B"]}).write_csv(folder / "companies.csv")
        pl.DataFrame({"email": ["j1@example.com", "j2@example.com"],
                      "company": ["a.example.com", "b.example.com"]}
                     ).write_csv(folder / "contacts.csv")
        (folder / "job.toml").write_text(JOB)
        job = await engine.run_job(folder / "job.toml", connection=conn)
        seen["job_steps"] = [[s.step, s.counts.rows_read, s.counts.associations]
                             for s in job.steps]
        seen["job_edges"] = len(sandbox.edges("contacts", "companies"))
    seen["signals_unchanged"] = all(signal.getsignal(s) == h for s, h in handlers.items())
    return seen


if __name__ == "__main__":
    print(orjson.dumps(asyncio.run(main(Path(sys.argv[1])))).decode())
