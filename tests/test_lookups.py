"""Owners by e-mail or name, pipelines and stages by label: resolved to ids before anything
is sent, or rejected locally with a code. Through the CLI, against the sandbox's seeded
owners and pipelines (engine/sandbox/pipelines.py)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from engine.cli import main
from engine.dryrun import run_dry
from engine.lookups import Lookups, Owner, OwnerLookup
from engine.mapping import MappingSpec
from engine.normalize import NormalizeOptions
from engine.schema import Option, Property, Schema, canonical_object
from engine.source import SourceSpec

ALICE, BRUNO, JORDAN_COM = "41629779", "52384011", "60017342"
RENEWALS = "87123456"
DEAL_MAPS = ["--map", "Deal Name=dealname", "--map", "Pipeline=pipeline",
             "--map", "Stage=dealstage", "--map", "Owner=hubspot_owner_id"]


def hsbulk_import(capsys, sandbox, source: Path, obj: str, *maps: str) -> tuple[int, str]:
    code = main(["import", str(source), "--object", obj, "--mode", "create", *maps,
                 "--base-url", sandbox.base_url, "--rate", "none", "--quiet",
                 "--checkpoint", str(source.parent / f"{obj}.db"),
                 "--rejects", str(source.parent / "rejects.csv")])
    return code, capsys.readouterr().err


def rejects_of(folder: Path) -> list[tuple[int, str, str, str]]:
    table = pl.read_csv(folder / "rejects.csv", infer_schema=False)
    return sorted((int(r["hsbulk_source_row"]), r["hsbulk_column"], r["hsbulk_code"],
                   r["hsbulk_value"]) for r in table.iter_rows(named=True))


def stored(sandbox, obj: str, name: str, *props: str) -> dict[str, tuple[str | None, ...]]:
    return {r["properties"][name]: tuple(r["properties"].get(p) for p in props)
            for r in sandbox.records(obj)}


def test_deal_stages_by_label_in_their_pipeline_and_owners_by_email_or_name(
        tmp_path, sandbox_env, capsys):
    sandbox = sandbox_env(rate_requests=None)
    source = tmp_path / "deals.csv"
    source.write_text(
        "Deal Name,Pipeline,Stage,Owner\n"
        "A,,Closed Won,  ALICE.Martin@Example.COM \n"     # 1 default pipeline; e-mail
        "B,Renewals,closed won,bruno   keller\n"           # 2 same label, other pipeline; name
        f"C,{RENEWALS},87123458,{JORDAN_COM}\n"            # 3 ids as they are
        "D,Sales Pipeline,Negotiation,\n"                  # 4 a Renewals stage
        "E,,Appointment Scheduled,Jordan Lee\n"            # 5 two owners have that name
        "F,,Contract Sent,nobody@example.com\n"            # 6 no such owner
        "G,Enterprise,Closed Won,\n"                       # 7 no such pipeline
        "H,  sales pipeline ,  contract SENT  ,\n")        # 8 labels, any case and spaces
    code, err = hsbulk_import(capsys, sandbox, source, "deals", *DEAL_MAPS)
    assert code == 1, err

    assert stored(sandbox, "deals", "dealname", "pipeline", "dealstage",
                  "hubspot_owner_id") == {
        "A": (None, "closedwon", ALICE),
        "B": (RENEWALS, "87123459", BRUNO),
        "C": (RENEWALS, "87123458", JORDAN_COM),
        "H": ("default", "contractsent", None),
    }
    assert rejects_of(tmp_path) == [
        (4, "Stage", "STAGE_NOT_IN_PIPELINE", "Negotiation"),
        (5, "Owner", "AMBIGUOUS_OWNER", "Jordan Lee"),
        (6, "Owner", "UNKNOWN_OWNER", "nobody@example.com"),
        (7, "Pipeline", "UNKNOWN_PIPELINE", "Enterprise"),
    ]
    messages = pl.read_csv(tmp_path / "rejects.csv", infer_schema=False).select(
        "hsbulk_code", "hsbulk_message").rows()
    by_code = dict(messages)
    assert by_code["UNKNOWN_OWNER"] == "no owner with e-mail 'nobody@example.com'"
    assert "'Negotiation' is not a stage of pipeline 'Sales Pipeline'" in by_code[
        "STAGE_NOT_IN_PIPELINE"]
    assert "Closed Won (closedwon)" in by_code["STAGE_NOT_IN_PIPELINE"]
    assert "60017342, 60017343" in by_code["AMBIGUOUS_OWNER"]
    assert "Renewals (87123456)" in by_code["UNKNOWN_PIPELINE"]
    calls = sandbox.audit()["calls"]
    assert calls["GET /crm/v3/pipelines/deals"]["calls"] == 1
    assert calls["GET /crm/v3/owners"]["calls"] == 1

    # A step that maps no owner, pipeline or stage reads neither.
    plain = tmp_path / "more.csv"
    plain.write_text("Deal Name,Amount\nI,10\n")
    code, err = hsbulk_import(capsys, sandbox, plain, "deals", "--map", "Deal Name=dealname",
                              "--map", "Amount=amount")
    assert code == 0, err
    assert sandbox.audit()["calls"]["GET /crm/v3/owners"] == calls["GET /crm/v3/owners"]
    assert (sandbox.audit()["calls"]["GET /crm/v3/pipelines/deals"]
            == calls["GET /crm/v3/pipelines/deals"])


def test_owners_are_read_once_over_every_page(tmp_path, sandbox_env, capsys, monkeypatch):
    monkeypatch.setattr("engine.lookups.OWNERS_PAGE", 2)  # 5 owners: 3 pages
    sandbox = sandbox_env(rate_requests=None)
    source = tmp_path / "contacts.csv"
    source.write_text("Email,Owner\n" + "".join(
        f"p{i}@example.com,Chloé Dubois\n" for i in range(250)))
    code, err = hsbulk_import(capsys, sandbox, source, "contacts", "--map", "Email=email",
                              "--map", "Owner=hubspot_owner_id")
    assert code == 0, err
    assert {r["properties"]["hubspot_owner_id"] for r in sandbox.records("contacts")} == {
        "118273645"}
    assert sandbox.audit()["calls"]["GET /crm/v3/owners"]["calls"] == 3


def test_ticket_statuses_by_label(tmp_path, sandbox_env, capsys):
    sandbox = sandbox_env(rate_requests=None)
    source = tmp_path / "tickets.csv"
    source.write_text("Subject,Status\nA,waiting on us\nB, Closed\nC,Escalated\nD,2\n")
    code, err = hsbulk_import(capsys, sandbox, source, "tickets", "--map", "Subject=subject",
                              "--map", "Status=hs_pipeline_stage")
    assert code == 1, err
    assert stored(sandbox, "tickets", "subject", "hs_pipeline_stage") == {
        "A": ("3",), "B": ("4",), "D": ("2",)}
    assert rejects_of(tmp_path) == [(3, "Status", "STAGE_NOT_IN_PIPELINE", "Escalated")]
    assert "GET /crm/v3/owners" not in sandbox.audit()["calls"]  # not mapped: not read


def test_the_dry_run_reports_owner_rejects_when_given_the_lookups(tmp_path):
    source = tmp_path / "contacts.csv"
    source.write_text("Email,Owner\na@example.com,ann@example.com\nb@example.com,nobody\n")
    owners = [Owner("11111111", "ann@example.com", "Ann", "Lee")]
    schema = Schema(canonical_object("contacts"), (
        Property("email", "Email", "string", "text", unique=True),
        Property("hubspot_owner_id", "Contact owner", "enumeration", "select",
                 options=(Option("x", "x"),), external_options=True)))
    plan = run_dry(SourceSpec(str(source)), schema,
                   MappingSpec(pairs=(("Email", "email"), ("Owner", "hubspot_owner_id"))),
                   NormalizeOptions(), rejects_path=tmp_path / "rejects.csv",
                   lookups=Lookups(OwnerLookup.of(owners, "Owner"), None))
    assert (plan.rows_valid, plan.rows_rejected) == (1, 1)
    assert rejects_of(tmp_path) == [(2, "Owner", "UNKNOWN_OWNER", "nobody")]


def test_drop_field_sends_the_row_without_the_unknown_owner(tmp_path, sandbox_env, capsys):
    sandbox = sandbox_env(rate_requests=None)
    source = tmp_path / "contacts.csv"
    source.write_text("Email,Owner\na@example.com,nobody@example.com\n")
    code, err = hsbulk_import(capsys, sandbox, source, "contacts", "--map", "Email=email",
                              "--map", "Owner=hubspot_owner_id", "--on-invalid", "drop-field")
    assert code == 0, err
    assert [r["properties"].get("hubspot_owner_id") for r in sandbox.records("contacts")] == [
        None]
    assert rejects_of(tmp_path) == [(1, "Owner", "UNKNOWN_OWNER", "nobody@example.com")]


def test_the_dry_run_reads_owners_and_stages_and_rejects_what_the_run_would(
        tmp_path, sandbox_env, capsys):
    sandbox = sandbox_env(rate_requests=None)
    source = tmp_path / "deals.csv"
    source.write_text("Deal Name,Pipeline,Stage,Owner\n"
                      "A,,Closed Won,alice.martin@example.com\n"
                      "B,Sales Pipeline,Negotiation,nobody@example.com\n")
    code = main(["import", str(source), "--object", "deals", "--mode", "create", *DEAL_MAPS,
                 "--base-url", sandbox.base_url, "--dry-run", "--quiet",
                 "--rejects", str(tmp_path / "rejects.csv")])
    assert code == 1, capsys.readouterr().err
    assert rejects_of(tmp_path) == [(2, "Owner", "UNKNOWN_OWNER", "nobody@example.com"),
                                    (2, "Stage", "STAGE_NOT_IN_PIPELINE", "Negotiation")]
    assert sandbox.records("deals") == []
