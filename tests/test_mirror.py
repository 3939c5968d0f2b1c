"""Mirror (`--mirror`): records and associations this state wrote and today's input no
longer holds are archived, under the `--max-archive` guard; nothing else is touched."""

from __future__ import annotations

import contextlib
import json

import pytest

from engine.api import Connection, ImportOptions, import_spec, open_client, start_sandbox
from engine.errors import ConfigError
from engine.imports.mirror import (
    MaxArchive,
    Mirror,
    check_guard,
    dry_run_plan,
    mark_input_seen,
    render_plan,
)
from engine.job import load_job
from engine.journal import DeltaStore, Edge, JournalThread, SqliteCheckpoint, Transition
from engine.schema import canonical_object
from engine.source import SourceSpec, open_source


@pytest.mark.parametrize(("text", "total", "allowed"), [
    ("5%", 10_000, 500), ("5%", 19, 0), ("0.5%", 1_000, 5), ("100%", 7, 7),
    ("200", 10, 200), ("0", 10_000, 0),
])
def test_the_guard_allows_a_count_or_a_share_of_the_state(text, total, allowed):
    assert MaxArchive.parse(text).limit(total) == allowed


def test_the_default_guard_is_five_percent():
    assert MaxArchive().limit(10_000) == 500


@pytest.mark.parametrize("text", ["", "-3", "five", "101%", "5 percent", "1e3"])
def test_a_malformed_guard_is_a_configuration_error(text):
    with pytest.raises(ConfigError, match="max archive"):
        MaxArchive.parse(text)


def test_above_the_guard_the_refusal_says_how_many_would_go():
    check_guard("records", 500, 10_000, MaxArchive())  # at the limit: allowed
    with pytest.raises(ConfigError) as refused:
        check_guard("records", 5_000, 10_000, MaxArchive())
    assert "5,000 records" in str(refused.value) and "nothing was archived" in str(
        refused.value)
    assert refused.value.exit_code == 2


# -- against the sandbox: a state as a delta import leaves it, then the mirror ------------

CONTACTS = canonical_object("contacts")


@contextlib.asynccontextmanager
async def mirror_env(tmp_path, count: int):
    """A sandbox with `count` contacts that a run 1 of the state wrote, and run 2 begun."""
    async with start_sandbox() as sandbox, open_client(
            Connection(sandbox.base_url, sandbox.token, rate=None)) as client:
        emails = [f"p{i:05d}@example.com" for i in range(count)]
        ids: list[str] = []
        for start in range(0, count, 100):
            answer = await client.post_json("/crm/v3/objects/contacts/batch/create", {
                "inputs": [{"properties": {"email": e}} for e in emails[start:start + 100]]})
            ids += [r["id"] for r in sorted(answer.json()["results"],
                                            key=lambda r: r["properties"]["email"])]
        store = DeltaStore(tmp_path / "state.db")
        checkpoint = SqliteCheckpoint(tmp_path / "journal.db")
        first = store.begin_run()
        store.confirm([(e, i, json.dumps({"email": e})) for e, i in zip(emails, ids,
                                                                          strict=True)], first)
        store.mark_seen(emails, first)
        store.finish_run(first)
        try:
            yield sandbox, client, store, checkpoint, emails, ids, store.begin_run()
        finally:
            store.close()
            checkpoint.close()


def live_emails(sandbox) -> set[str]:
    return {r["properties"].get("email") for r in sandbox.records("contacts")}


def archive_calls(sandbox) -> dict[str, int]:
    return sandbox.audit()["calls"].get("POST /crm/v3/objects/contacts/batch/archive",
                                        {"calls": 0, "inputs": 0})


async def test_mirror_archives_exactly_the_absent_records_and_never_a_foreign_one(tmp_path):
    async with mirror_env(tmp_path, 1_000) as (sandbox, client, store, checkpoint, emails,
                                               _ids, run):
        await client.post_json("/crm/v3/objects/contacts/batch/create", {
            "inputs": [{"properties": {"email": "someone@else.com"}}]})  # not the state's
        kept = emails[:950]
        store.mark_seen(kept, run)
        mirror = Mirror(client, checkpoint, JournalThread(), store, step="import",
                        obj=CONTACTS, run_id=run, guard=MaxArchive())
        outcome = await mirror.run()
        assert outcome.archived == 50
        assert live_emails(sandbox) == {*kept, "someone@else.com"}
        assert archive_calls(sandbox) == {"calls": 1, "inputs": 50}
        assert store.size() == 950 and not store.lookup(emails[950:])


async def test_above_the_guard_nothing_is_archived(tmp_path):
    async with mirror_env(tmp_path, 400) as (sandbox, client, store, checkpoint, emails, _ids,
                                             run):
        store.mark_seen(emails[:200], run)
        mirror = Mirror(client, checkpoint, JournalThread(), store, step="import",
                        obj=CONTACTS, run_id=run, guard=MaxArchive())
        with pytest.raises(ConfigError, match="would archive 200 records of the 400"):
            await mirror.run()
        assert len(live_emails(sandbox)) == 400 and store.size() == 400
        assert archive_calls(sandbox)["calls"] == 0
        raised = Mirror(client, checkpoint, JournalThread(), store, step="import",
                        obj=CONTACTS, run_id=run, guard=MaxArchive.parse("50%"))
        assert (await raised.run()).archived == 200


async def test_a_resumed_mirror_forgets_what_an_interrupted_one_had_archived(tmp_path):
    """The crash came after the journal had the call DONE and before the state forgot the
    keys: the next run forgets them without archiving (or counting) them twice."""
    async with mirror_env(tmp_path, 300) as (sandbox, client, store, checkpoint, emails, ids,
                                             run):
        store.mark_seen(emails[:290], run)
        gone = emails[290:]
        await client.post_json("/crm/v3/objects/contacts/batch/archive",
                               {"inputs": [{"id": i} for i in ids[290:]]})
        checkpoint.apply([Transition.begin("import:archive", 0, list(range(1, 11)), gone),
                          Transition.edges_written("import:archive", 0, 10)])
        before = archive_calls(sandbox)["calls"]
        outcome = await Mirror(client, checkpoint, JournalThread(), store, step="import",
                               obj=CONTACTS, run_id=run, guard=MaxArchive()).run()
        assert outcome.archived == 10 and archive_calls(sandbox)["calls"] == before
        assert store.size() == 290


async def test_mirror_unlinks_the_absent_associations_it_wrote_and_no_other(tmp_path):
    async with mirror_env(tmp_path, 3) as (sandbox, client, store, checkpoint, emails, ids,
                                           run):
        answer = await client.post_json("/crm/v3/objects/companies/batch/create", {
            "inputs": [{"properties": {"domain": f"c{i}.com"}} for i in range(3)]})
        companies = sorted(r["id"] for r in answer.json()["results"])
        pairs = [(ids[0], companies[0]), (ids[0], companies[1]), (ids[1], companies[2]),
                 (ids[2], companies[2])]
        await client.post_json("/crm/v4/associations/contacts/companies/batch/associate/"
                               "default", {"inputs": [{"from": {"id": a}, "to": {"id": b}}
                                                      for a, b in pairs]})
        by_id = dict(zip(ids, emails, strict=True))
        written = [Edge(by_id[a], "companies", b, 279) for a, b in pairs[:3]]  # not the 4th
        store.confirm_edges(written, run - 1)
        store.mark_seen(emails, run)
        store.mark_edges_seen([written[0], written[2]], run)
        outcome = await Mirror(client, checkpoint, JournalThread(), store, step="import",
                               obj=CONTACTS, run_id=run, guard=MaxArchive(1, None)).run(edges=True)
        assert outcome.unlinked == 1 and outcome.archived == 0
        left = {(e["fromId"], e["toId"]) for e in sandbox.edges("contacts", "companies")}
        assert left == {pairs[0], pairs[2], pairs[3]}
        assert store.edges_of(emails) == sorted([written[0], written[2]])


async def test_dry_run_lists_the_ids_and_keys_and_every_input_row_protects_its_record(
        tmp_path):
    """Keys are read from the input as it is (a row refused for a bad value today still
    names its record), trimmed and case-folded as the state holds them."""
    async with mirror_env(tmp_path, 100) as (sandbox, client, store, checkpoint, emails, ids,
                                             run):
        csv = tmp_path / "today.csv"
        csv.write_text("Email,Amount\n" + "".join(
            f" {e.upper()} ,{'not a number' if i % 7 else 5}\n"
            for i, e in enumerate(emails[:97])))
        source = open_source(SourceSpec(str(csv)))
        planned = dry_run_plan(source, "Email", store)
        assert planned == [(e, i) for e, i in zip(emails[97:], ids[97:], strict=True)]
        assert len(live_emails(sandbox)) == 100 and store.size() == 100
        text = render_plan(planned, store.size(), MaxArchive())
        assert text.splitlines()[1:] == [f"{i}\t{e}" for e, i in planned]
        mark_input_seen(source, "Email", store, run)
        outcome = await Mirror(client, checkpoint, JournalThread(), store, step="import",
                               obj=CONTACTS, run_id=run, guard=MaxArchive()).run()
        assert outcome.archived == 3 and live_emails(sandbox) == set(emails[:97])


def test_job_steps_take_mirror_max_archive_and_verify_sample(tmp_path):
    (tmp_path / "c.csv").write_text("email\na@b.com\n")
    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "nightly"\n[[steps]]\nname = "contacts"\n'
                   'object = "contacts"\nsource = "c.csv"\nid_property = "email"\n'
                   'mirror = true\nmax_archive = "200"\nverify_sample = 50\n')
    spec = load_job(job).steps[0].spec
    assert (spec.mirror, spec.max_archive, spec.verify_sample) == (True, "200", 50)
    job.write_text(job.read_text().replace('"200"', '"lots"'))
    with pytest.raises(ConfigError, match="step 'contacts': max archive 'lots'"):
        load_job(job)


def test_the_api_refuses_a_malformed_guard_before_any_call():
    with pytest.raises(ConfigError, match="max archive"):
        import_spec("contacts", SourceSpec("x.csv"),
                    ImportOptions(id_property="email", mirror=True, max_archive="-5%"))
