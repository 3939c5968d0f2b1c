"""Export against the sandbox: every record and edge exactly once, typed Parquet, CSV
escaping, incremental exports past the 10,000 search cap."""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import anyio
import orjson
import polars as pl
import pytest

from engine.cli import add_export_arguments, export_spec_from_args
from engine.client import HubSpotClient
from engine.config import ClientSettings, Rate, Secret
from engine.errors import ConfigError
from engine.exports import ExportSpec, run_export
from engine.exports.parts import Column, shape_frame
from engine.exports.plan import IdRange, Planner, SplitLog
from engine.interrupt import StopRequest
from engine.journal import ExportJournal, JournalThread
from engine.sandbox import SandboxSettings, running_sandbox

ROLES = ["CHAMPION", "BLOCKER", "END_USER"]


class Seeder:
    """Writes straight to a sandbox's batch endpoints (100 inputs a call, no limits)."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Seeder:
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()

    async def post(self, path: str, body: object) -> dict:
        assert self.session is not None
        async with self.session.post(self.base_url + path, data=orjson.dumps(body),
                                     headers=self.headers) as answer:
            text = await answer.read()
            assert answer.status < 300, text[:500]
            return orjson.loads(text) if text else {}

    async def properties(self) -> None:
        for name, ptype, field in (("score", "number", "number"),
                                   ("seen_at", "datetime", "date")):
            await self.post("/crm/v3/properties/contacts", {
                "name": name, "label": name, "type": ptype, "fieldType": field,
                "groupName": "contactinformation"})

    async def create(self, kind: str, inputs: list[dict]) -> list[str]:
        ids: list[str] = []
        for start in range(0, len(inputs), 100):
            answer = await self.post(f"/crm/v3/objects/{kind}/batch/create",
                                     {"inputs": inputs[start : start + 100]})
            ids += [r["id"] for r in answer["results"]]
        return ids


def contact(i: int, companies: list[str] | None = None) -> dict:
    props = {"email": f"p{i}@example.com", "firstname": f"F{i}", "city": f"City {i % 50}",
             "score": str(i % 1000 - 500), "date_of_birth": f"1990-03-{i % 28 + 1:02d}",
             "seen_at": f"2024-01-02T03:04:{i % 60:02d}.123Z",
             "hs_email_optout": "true" if i % 2 else "false",
             "hs_buying_role": ";".join(ROLES[: i % 3 + 1])}
    item: dict = {"properties": props}
    if companies:
        target = companies[i % len(companies)]
        types = [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]
        if i % 7 == 0:
            types.append({"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 1})
        item["associations"] = [{"to": {"id": target}, "types": types}]
    return item


def client_for(sandbox, **changes) -> HubSpotClient:
    settings = ClientSettings(sandbox.base_url, Secret(sandbox.token),
                              **{"rate": None, "search_rate": None, **changes})
    return HubSpotClient(settings)


def read_dataset(folder: Path, fmt: str = "parquet") -> pl.DataFrame:
    files = sorted(folder.glob(f"part-*.{fmt}"))
    assert files, folder
    if fmt == "parquet":
        return pl.concat([pl.read_parquet(f) for f in files])
    return pl.concat([pl.read_csv(f, infer_schema=False) for f in files])


@pytest.mark.timeout(120)
async def test_export_reads_every_record_and_edge_once_with_both_readers(tmp_path):
    rows = 45_000
    settings = SandboxSettings(rate_requests=0, search_rate_per_s=None, latency_ms=2)
    async with running_sandbox(settings) as sandbox, Seeder(sandbox.base_url,
                                                            sandbox.token) as seed:
        await seed.properties()
        companies = await seed.create("companies", [
            {"properties": {"name": f"Co {i}", "domain": f"co{i}.example"}}
            for i in range(600)])
        ids = await seed.create("contacts", [contact(i, companies) for i in range(rows)])
        # One contact with 600 companies: the v4 read pages it (500 per page).
        await seed.post("/crm/v4/associations/contacts/companies/batch/create", {"inputs": [
            {"from": {"id": ids[5]}, "to": {"id": c},
             "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]}
            for c in companies]})
        spec = ExportSpec("contacts", tmp_path / "out", associations=("companies",),
                          partitions=1, rows_per_part=4_000, search_chunk=12_000,
                          checkpoint=tmp_path / "export.db")
        # A list much slower than search: the search reader cuts pieces past the cap.
        sandbox.configure(latency_ms=150, search_latency_ms=2)
        async with client_for(sandbox) as client:
            summary = await run_export(client, spec)
        stored = {int(r["id"]): r["properties"] for r in sandbox.records("contacts")}
        edges = sandbox.edges("contacts", "companies")

    out = tmp_path / "out"
    frame = read_dataset(out / "contacts")
    assert frame.height == rows and frame["id"].n_unique() == rows
    assert set(frame["id"].to_list()) == set(stored)
    assert summary.records == rows and summary.search_calls > 0 and summary.list_calls > 0
    schema = frame.schema
    assert schema["id"] == pl.Int64 and schema["email"] == pl.String
    assert schema["date_of_birth"] == pl.Date
    assert schema["seen_at"] == pl.Datetime("ms", "UTC")
    assert schema["lastmodifieddate"] == pl.Datetime("ms", "UTC")
    assert schema["score"] == pl.Float64 and schema["hs_email_optout"] == pl.Boolean
    assert schema["hs_buying_role"] == pl.List(pl.String)
    assert "hs_object_id" not in schema
    row = frame.filter(pl.col("id") == int(ids[4])).row(0, named=True)
    want = stored[int(ids[4])]
    assert row["email"] == want["email"] and row["score"] == float(want["score"])
    assert row["date_of_birth"].isoformat() == want["date_of_birth"]
    assert row["seen_at"] == datetime(2024, 1, 2, 3, 4, 4, 123000, tzinfo=UTC)
    assert row["hs_email_optout"] is False and row["hs_buying_role"] == ROLES[:2]
    assert summary.unparsed_values == 0

    # The search range held more than 10,000 records: read past the cap by id.
    journal = ExportJournal(tmp_path / "export.db")
    try:
        kinds = {r.id: r.kind for r in journal.ranges()}
        per_range: dict[int, int] = {}
        for part in journal.parts("contacts"):
            per_range[part.range_id] = per_range.get(part.range_id, 0) + part.rows
    finally:
        journal.close()
    assert max(n for rid, n in per_range.items() if kinds[rid] == "search") > 10_000

    table = read_dataset(out / "contacts__companies")
    assert table.columns == ["from_id", "to_id", "type_id", "category", "label"]
    got = [tuple(r) for r in table.select("from_id", "to_id", "type_id").iter_rows()]
    want_edges = [(int(e["fromId"]), int(e["toId"]), e["typeId"]) for e in edges]
    assert len(got) == len(set(got)) and sorted(got) == sorted(want_edges)
    assert len(got) > rows + 600  # the paged contact, Primary labels
    primary = table.filter(pl.col("type_id") == 1)
    assert set(primary["label"].to_list()) == {"Primary"}
    manifest = orjson.loads((out / "_manifest.json").read_bytes())
    assert manifest["records"] == rows and manifest["edges"]["companies"] == len(got)
    listed = {f["path"] for f in manifest["files"]}
    on_disk = {str(p.relative_to(out)) for p in out.glob("*/part-*")}
    assert listed == on_disk


INJECTIONS = ["=1+1", "+1", "-1+1", "@SUM(A1)", "\tx", "\rx", "\nx",
              '=HYPERLINK("http://x","y")', "plain", "a,b \"q\""]


async def _export_injections(tmp_path: Path, escape: bool) -> pl.DataFrame:
    async with running_sandbox(SandboxSettings(rate_requests=0,
                                               search_rate_per_s=None)) as sandbox:
        async with Seeder(sandbox.base_url, sandbox.token) as seed:
            await seed.properties()
            await seed.create("contacts", [
                {"properties": {"email": f"x{i}@example.com", "city": value, "score": "-5"}}
                for i, value in enumerate(INJECTIONS)])
        name = "escaped" if escape else "raw"
        spec = ExportSpec("contacts", tmp_path / name, format="csv",
                          properties=("email", "city", "score"), escape_formulas=escape)
        async with client_for(sandbox) as client:
            await run_export(client, spec)
    part = next((tmp_path / name / "contacts").glob("part-*.csv"))
    assert b"\r\n" in part.read_bytes()  # RFC 4180 line ends
    return read_dataset(tmp_path / name / "contacts", "csv").sort(
        pl.col("id").cast(pl.Int64))


async def test_csv_escapes_formula_cells_unless_opted_out(tmp_path):
    escaped = await _export_injections(tmp_path, escape=True)
    cities = escaped["city"].to_list()
    assert cities[:8] == ["'" + v for v in INJECTIONS[:8]]
    assert cities[8:] == INJECTIONS[8:]
    assert set(escaped["score"].to_list()) == {"-5"}  # a number column stays as it is
    raw = await _export_injections(tmp_path, escape=False)
    assert raw["city"].to_list() == INJECTIONS


def test_shape_frame_escapes_only_text_columns():
    raw = pl.DataFrame({"id": [1, 2], "note": ["-5", "=A1"], "score": ["-5", "+3"]})
    columns = [Column("note", "string"), Column("score", "number")]
    frame, _ = shape_frame(raw, columns, "csv", True)
    assert frame["note"].to_list() == ["'-5", "'=A1"]
    assert frame["score"].to_list() == ["-5", "+3"]
    typed, unparsed = shape_frame(raw, columns, "parquet", True)
    assert typed["note"].to_list() == ["-5", "=A1"]  # Parquet stays raw
    assert typed["score"].to_list() == [-5.0, 3.0] and unparsed == 0


@pytest.mark.timeout(120)
async def test_incremental_export_reads_past_the_search_cap(tmp_path):
    rows, changed = 30_000, 25_000
    async with running_sandbox(SandboxSettings(rate_requests=0,
                                               search_rate_per_s=None)) as sandbox:
        async with Seeder(sandbox.base_url, sandbox.token) as seed:
            ids = await seed.create("contacts", [
                {"properties": {"email": f"p{i}@example.com"}} for i in range(rows)])
            await asyncio.sleep(0.05)
            since = datetime.now(UTC)
            await asyncio.sleep(0.05)
            touched = ids[2_500 : 2_500 + changed]
            for start in range(0, changed, 100):
                await seed.post("/crm/v3/objects/contacts/batch/update", {"inputs": [
                    {"id": rid, "properties": {"firstname": "changed"}}
                    for rid in touched[start : start + 100]]})
        spec = ExportSpec("contacts", tmp_path / "delta", properties=("email", "firstname"),
                          since=since, partitions=2)
        started = time.time()
        async with client_for(sandbox) as client:
            summary = await run_export(client, spec)
        frame = read_dataset(tmp_path / "delta" / "contacts")
        assert frame.height == changed and frame["id"].n_unique() == changed
        assert set(frame["id"].to_list()) == {int(i) for i in touched}
        assert set(frame["firstname"].to_list()) == {"changed"}
        assert summary.list_calls == 0
        manifest = orjson.loads((tmp_path / "delta" / "_manifest.json").read_bytes())
        watermark = datetime.fromisoformat(manifest["watermark"].replace("Z", "+00:00"))
        assert since < watermark and watermark.timestamp() <= started + 1

        # Continue from the manifest: nothing changed since, so nothing is exported.
        parser = argparse.ArgumentParser()
        add_export_arguments(parser)
        args = parser.parse_args(["contacts", "--out", str(tmp_path / "next"),
                                  "--since-manifest", str(tmp_path / "delta"),
                                  "--lookback", "0s"])
        next_spec = export_spec_from_args(args)
        assert next_spec.since == watermark
        async with client_for(sandbox) as client:
            again = await run_export(client, next_spec)
        assert again.records == 0


async def test_planner_sizes_pieces_so_search_readers_end_with_the_list_cursor(tmp_path):
    """Near the end a search reader (a share of ~5 calls/s) must not take a piece it cannot
    finish before the list cursor would have read it: that piece would be the export's tail."""
    journal = ExportJournal(tmp_path / "plan.db")
    journal.open("spec", "2026-01-01T00:00:00.000Z")
    journal.plan([("list", 0, 100_000)], 100_000, 1.0)
    splits = SplitLog(journal, JournalThread())
    now = [0.0]
    ranges = [IdRange.of(r) for r in journal.ranges()]
    planner = Planner(ranges, next_id=2, chunk_ids=10_000, readers=4, page_ids=200,
                      clock=lambda: now[0])
    listed = planner.take_list_range()
    assert listed is not None
    taken = planner.take_search_range()  # no speeds yet: a piece of a few pages
    assert taken is not None and taken[1] is not None
    first = taken[0]
    await splits.record(taken[1])
    assert (first.lo, first.hi) == (99_000, 100_000)
    # 10 s later: the list read 10,000 records, the search readers 8,000.
    now[0] = 10.0
    planner.count("list", 10_000)
    planner.count("search", 8_000)
    listed.cursor = first.lo - 16_000 - 1  # 16,000 ids left below the first piece's lo
    taken = planner.take_search_range()
    assert taken is not None and taken[1] is not None
    second = taken[0]
    await splits.record(taken[1])
    # One reader (plus this one) shares 800 records/s: 400/s. The list (1,000/s) and every
    # search reader end the remaining 16,000 ids together after 16,000 / 2,200 s, so the piece
    # is at most 400 * 16,000 / 2,200 ids.
    assert 2_500 <= second.hi - second.lo <= 400 * 16_000 // 2_200
    journaled = {r.id: (r.lo, r.hi) for r in journal.ranges()}
    assert listed.hi == second.lo and journaled[listed.id] == (0, second.lo)
    assert journaled[first.id] == (99_000, 100_000)
    assert journaled[second.id] == (second.lo, 99_000)
    # With 300 ids left, even one page would outlast the list cursor: no piece at all.
    listed.cursor = listed.hi - 301
    first.cursor, second.cursor = first.hi - 301, second.hi - 301
    assert planner.take_search_range() is None
    assert listed.hi == second.lo
    journal.close()


@pytest.mark.parametrize("partitions", [0, 2])
async def test_every_property_of_a_wide_schema_is_exported(tmp_path, partitions):
    """Hundreds of properties do not fit in a list URL (HubSpot answers 414 past ~8 KB):
    the list cursor reads ids and fetches the properties by batch read instead."""
    wide = [f"legacy_system_attribute_number_{n:04d}" for n in range(300)]
    async with running_sandbox(SandboxSettings(rate_requests=0, search_rate_per_s=None)
                               ) as sandbox, Seeder(sandbox.base_url, sandbox.token) as seed:
        for name in wide:
            await seed.post("/crm/v3/properties/contacts", {
                "name": name, "label": name, "type": "string", "fieldType": "text",
                "groupName": "contactinformation"})
        await seed.create("contacts", [
            {"properties": {"email": f"w{i}@example.com",
                            **{name: f"{name[-4:]}-{i}" for name in wide[i % 3::3]}}}
            for i in range(1_200)])
        spec = ExportSpec("contacts", tmp_path / "out", partitions=partitions,
                          rows_per_part=500, checkpoint=tmp_path / "export.db")
        async with client_for(sandbox) as client:
            summary = await run_export(client, spec)
    frame = read_dataset(tmp_path / "out" / "contacts")
    assert summary.records == 1_200 and frame.height == 1_200
    assert set(wide) <= set(frame.columns)
    by_email = {row["email"]: row for row in frame.iter_rows(named=True)}
    for i in (0, 1, 2, 599, 1_199):
        row = by_email[f"w{i}@example.com"]
        for k, name in enumerate(wide):
            assert row[name] == (f"{name[-4:]}-{i}" if k % 3 == i % 3 else None), (i, name)


async def test_a_slow_journal_never_stalls_the_event_loop(tmp_path, monkeypatch):
    """A host's other tasks (an orchestrator's heartbeat, a notebook) keep running while the
    export commits its journal: journal writes (fsync, maybe on a slow disk) run off the
    event loop."""
    slow_s = 0.6
    advance = ExportJournal.advance

    def slow_advance(self: ExportJournal, *args: object) -> None:
        time.sleep(slow_s)  # a commit on a slow disk
        advance(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ExportJournal, "advance", slow_advance)
    gaps: list[float] = []

    async def heartbeat() -> None:
        last = time.monotonic()
        while True:
            await anyio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with running_sandbox(SandboxSettings(rate_requests=0, search_rate_per_s=None)
                               ) as sandbox, Seeder(sandbox.base_url, sandbox.token) as seed:
        await seed.properties()
        await seed.create("contacts", [contact(i) for i in range(300)])
        spec = ExportSpec("contacts", tmp_path / "out", partitions=0, rows_per_part=100,
                          properties=("email",), checkpoint=tmp_path / "export.db")
        async with client_for(sandbox) as client, anyio.create_task_group() as tg:
            tg.start_soon(heartbeat)
            summary = await run_export(client, spec)
            tg.cancel_scope.cancel()
    assert summary.records == 300 and summary.parts == 3
    assert max(gaps) < slow_s / 2, max(gaps)


@pytest.mark.parametrize("changes", [
    {"format": "xlsx"}, {"partitions": -1}, {"rows_per_part": 0},
    {"since": datetime(2026, 1, 1, tzinfo=UTC), "archived": True},
    {"lookback": timedelta(seconds=-1)}])
def test_export_settings_errors_name_no_command_line_flag(tmp_path, changes):
    """Library callers never passed a flag: the message names the setting, not `--x`."""
    with pytest.raises(ConfigError) as caught:
        ExportSpec("contacts", tmp_path, **changes)
    assert "--" not in str(caught.value)


async def test_the_list_cursor_takes_the_unread_part_of_a_search_piece_it_reaches(tmp_path):
    journal = ExportJournal(tmp_path / "plan.db")
    journal.open("spec", "2026-01-01T00:00:00.000Z")
    journal.plan([("list", 0, 100_000)], 100_000, 1.0)
    splits = SplitLog(journal, JournalThread())
    planner = Planner([IdRange.of(r) for r in journal.ranges()], next_id=2,
                      chunk_ids=10_000, readers=2, page_ids=200)
    listed = planner.take_list_range()
    assert listed is not None
    top, middle = [], []
    for pieces in (top, middle):
        taken = planner.take_search_range()
        assert taken is not None and taken[1] is not None
        await splits.record(taken[1])
        pieces.append(taken[0])
    (top_piece,), (middle_piece,) = top, middle
    assert (middle_piece.lo, middle_piece.hi, top_piece.hi) == (98_000, 99_000, 100_000)
    middle_piece.cursor = 98_399  # its reader has two pages; a third is on its way
    listed.cursor, listed.closing = 97_999, True  # the list cursor reached it
    taken = planner.take_unread_above(listed, "token-97999")
    assert taken is not None
    stolen, cut = taken
    await splits.record(cut)
    assert (stolen.kind, stolen.lo, stolen.hi) == ("list", 98_400, 99_000)
    assert middle_piece.hi == 98_400  # the late third page is dropped by its reader
    journaled = {r.id: (r.kind, r.lo, r.hi, r.after) for r in journal.ranges()}
    assert journaled[middle_piece.id] == ("search", 98_000, 98_400, None)
    # A resumed export reads it with the list, from the page the list cursor was reading.
    assert journaled[stolen.id] == ("list", 98_400, 99_000, "token-97999")
    # A piece whose reader has seen its end is skipped; the next one above is taken.
    middle_piece.closing = True
    stolen.cursor, stolen.closing = 98_999, True
    taken = planner.take_unread_above(stolen)
    assert taken is not None and (taken[0].lo, taken[0].hi) == (99_000, 100_000)
    assert top_piece.hi == 99_000 and planner.steals == 2
    journal.close()


async def _seeded_export(tmp_path: Path, settings: SandboxSettings, rows: int,
                         partitions: int, **client_changes) -> tuple:
    async with running_sandbox(settings) as sandbox:
        sandbox.configure(rate_requests=0, search_rate_per_s=None, latency_ms=0,
                          search_latency_ms=None, search_window_headers=False)
        async with Seeder(sandbox.base_url, sandbox.token) as seed:
            await seed.create("contacts", [
                {"properties": {"email": f"s{i}@example.com"}} for i in range(rows)])
        sandbox.configure(**{k: getattr(settings, k) for k in (
            "rate_requests", "rate_window_s", "search_rate_per_s", "latency_ms",
            "search_latency_ms", "search_window_headers")})
        spec = ExportSpec("contacts", tmp_path / "out", properties=("email",),
                          partitions=partitions, rows_per_part=2_000,
                          checkpoint=tmp_path / "export.db")
        async with client_for(sandbox, **client_changes) as client:
            started = time.monotonic()
            summary = await run_export(client, spec)
            elapsed = time.monotonic() - started
            cuts = client.search_limiter.cuts
    frame = read_dataset(tmp_path / "out" / "contacts")
    assert frame.height == rows and frame["id"].n_unique() == rows
    return summary, elapsed, cuts


@pytest.mark.timeout(60)
async def test_a_slow_search_never_holds_ids_the_list_cursor_reads_sooner(tmp_path):
    """Searches answer in ~1 s, the list in ~5 ms: past its probes (both at once) the
    export ends about when the list cursor alone would: the list cursor takes what the
    search readers have not read, and their pages still out are called off."""
    settings = SandboxSettings(rate_requests=0, search_rate_per_s=None, latency_ms=5,
                               search_latency_ms=1_000)
    summary, elapsed, _ = await _seeded_export(tmp_path, settings, 8_000, partitions=2)
    assert summary.records == 8_000
    # The probes (up to 1.5 s), the list's 80 pages (well under 1 s); it took 8 s when the
    # list cursor waited for the search readers' pieces.
    assert elapsed < 3.5, (elapsed, summary)


@pytest.mark.timeout(60)
async def test_window_headers_on_search_answers_leave_the_export_searching_at_5_per_s(
        tmp_path):
    """A sandbox that sends the 10-second window's headers (100 per 2 s, mostly used by the
    list cursor) on search answers: the search limiter keeps its own 5/s."""
    settings = SandboxSettings(rate_requests=100, rate_window_s=2.0, search_rate_per_s=5,
                               latency_ms=50, search_window_headers=True)
    summary, elapsed, cuts = await _seeded_export(
        tmp_path, settings, 12_000, partitions=4,
        rate=Rate(100, 2.0), search_rate=Rate(5, 1.0))
    assert summary.records == 12_000 and summary.http_429 == 0
    assert cuts == 0
    assert summary.search_calls / elapsed >= 4.0, (summary, elapsed)


def test_the_list_cursor_takes_only_what_it_reaches_before_the_search_reader():
    """Speeds known: the list cursor pages over ids the search reader has read or will
    read first, so it takes a range's top from where the two meet."""
    now = [10.0]
    ranges = [IdRange(1, "list", 0, 80_000, 79_999, None, owned=True, closing=True),
              IdRange(2, "search", 80_000, 90_000, 80_399, None, owned=True),
              IdRange(3, "search", 90_000, 100_000, 90_999, None, owned=True)]
    planner = Planner(ranges, next_id=4, clock=lambda: now[0])
    planner.started = 0.0
    planner.count("list", 10_000)  # 1,000 records/s
    planner.count("search", 4_000)  # 400/s shared by two readers: 200/s each
    taken = planner.take_unread_above(ranges[0])
    assert taken is not None
    stolen, cut = taken
    # 500 ids to page take the list cursor 0.5 s; the reader reads 100 ids in that time.
    assert (cut.victim, stolen.lo, stolen.hi) == (2, 80_500, 90_000)
    assert ranges[1].hi == 80_500
    # A search as fast as the list: the list cursor never catches up; nothing is taken.
    planner.count("search", 16_000)
    assert planner.take_unread_above(stolen) is None


@pytest.mark.timeout(60)
async def test_the_list_cursor_reads_at_once_however_slow_the_search(tmp_path):
    """Searches answer in 3 s, the list in ~5 ms: the list cursor does not wait for the
    probes (searches) to start reading, so the export ends when the list alone would."""
    settings = SandboxSettings(rate_requests=0, search_rate_per_s=None, latency_ms=5,
                               search_latency_ms=3_000)
    summary, elapsed, _ = await _seeded_export(tmp_path, settings, 6_000, partitions=2)
    assert summary.records == 6_000 and summary.list_calls >= 60
    assert elapsed < 2.5, (elapsed, summary)  # the probes alone take 3 s


async def test_a_resumed_export_reads_with_the_list_a_range_the_list_cursor_took(tmp_path):
    """A range the list cursor took from a search reader's piece is journaled as the
    list's: a resumed export reads it with the list API, not by search."""
    rows = 3_000
    async with running_sandbox(SandboxSettings(rate_requests=0, search_rate_per_s=None)
                               ) as sandbox:
        async with Seeder(sandbox.base_url, sandbox.token) as seed:
            await seed.create("contacts", [
                {"properties": {"email": f"r{i}@example.com"}} for i in range(rows)])
        ids = sorted(int(r["id"]) for r in sandbox.records("contacts"))
        spec = ExportSpec("contacts", tmp_path / "out", properties=("email",),
                          partitions=1, rows_per_part=500, checkpoint=tmp_path / "export.db")
        stop = StopRequest()
        stop.request()  # a first run stopped before it read anything: its plan journaled
        async with client_for(sandbox) as client:
            assert (await run_export(client, spec, stop=stop)).state == "stopped"

        # What that run would have journaled had it read on: a search reader cut a piece
        # off the top and read a page of it; the list cursor reached it and took the rest.
        journal = ExportJournal(tmp_path / "export.db")
        (planned,) = journal.ranges()
        end = ids[-1] + 1
        journal.plan([], rows, 1.0)  # the records and their density known
        if planned.hi > end:  # nothing lies above the last id
            journal.split(planned.id, end, planned.id + 1)
            journal.advance(planned.id + 1, None, None, True, None)
        ranges = [IdRange.of(r) for r in journal.ranges() if r.id == planned.id]
        planner = Planner(ranges, next_id=planned.id + 2, chunk_ids=600, min_split=100)
        splits = SplitLog(journal, JournalThread())
        listed = planner.take_list_range()
        taken = planner.take_search_range()
        assert listed is not None and taken is not None and taken[1] is not None
        piece = taken[0]
        await splits.record(taken[1])
        piece.cursor = piece.lo + 199
        listed.cursor, listed.closing = piece.lo - 1, True
        stolen = planner.take_unread_above(listed)
        assert stolen is not None
        await splits.record(stolen[1])
        journal.advance(listed.id, listed.cursor, None, True, None)
        journal.advance(piece.id, piece.cursor, None, True, None)
        journal.close()
        left = [i for i in ids if i >= stolen[0].lo]
        assert len(left) == 400

        before = sandbox.audit()["calls"]
        async with client_for(sandbox) as client:
            summary = await run_export(client, spec)
        after = sandbox.audit()["calls"]

    def calls(route: str) -> int:
        return int(after.get(route, {}).get("calls", 0)
                   - before.get(route, {}).get("calls", 0))

    assert summary.resumed and summary.records == len(left)
    assert calls("POST /crm/v3/objects/contacts/search") == 0
    assert calls("GET /crm/v3/objects/contacts") >= len(left) // 100
    frame = read_dataset(tmp_path / "out" / "contacts")
    assert sorted(frame["id"].to_list()) == left
