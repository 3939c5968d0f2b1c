"""The exactly-once rule the pipeline keeps while commits overlap: no batch leaves before
its IN_FLIGHT entry is durable in the journal."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson

from engine.cli import main
from engine.client import AiohttpTransport, Request, Response
from tests.conftest import write_csv


def in_flight_rows(journal: Path) -> set[int]:
    """Source rows of every batch the journal holds IN_FLIGHT, as another reader sees it."""
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
        blobs = db.execute("select rows from batches where state = 'IN_FLIGHT'").fetchall()
    return {row for (blob,) in blobs for row in orjson.loads(blob)}


def test_no_batch_is_sent_before_its_in_flight_entry_is_durable(tmp_path, sandbox_env,
                                                                  monkeypatch):
    sandbox = sandbox_env()
    rows = [[f"u{i}@example.org", f"First{i}"] for i in range(4_000)]
    source = write_csv(tmp_path / "contacts.csv", ["email", "firstname"], rows)
    journal = tmp_path / "job.db"
    sent: list[int] = []
    early: list[int] = []
    send = AiohttpTransport.send

    async def checked(self: AiohttpTransport, request: Request) -> Response:
        if request.url.endswith("/batch/create") and request.body:
            batch = {int(i["objectWriteTraceId"])
                     for i in orjson.loads(request.body)["inputs"]}
            sent.extend(batch)
            early.extend(batch - in_flight_rows(journal))
        return await send(self, request)

    monkeypatch.setattr(AiohttpTransport, "send", checked)
    code = main(["import", str(source), "--object", "contacts", "--mode", "create",
                 "--id-property", "email", "--base-url", sandbox.base_url, "--rate", "none",
                 "--concurrency", "4", "--quiet", "--checkpoint", str(journal)])
    assert code == 0
    assert sorted(sent) == list(range(1, 4_001))  # every row once
    assert early == []
    assert len(sandbox.records("contacts")) == 4_000
