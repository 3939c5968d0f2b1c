"""Value cleaning (issue #15): trimmed values, local e-mail checks, clean domains, currency
amounts and value maps, from `normalize` up to the CLI against the sandbox."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import orjson
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine.cli import main
from engine.errors import ConfigError
from engine.mapping import (
    ColumnOptions,
    MappingSpec,
    ResolvedMapping,
    Target,
    resolve_mapping,
)
from engine.normalize import NormalizeOptions, expressions, normalize
from engine.schema import Schema, parse_properties
from tests.conftest import write_csv
from tests.test_associate_existing import edges, seed_companies

CASES = Path(__file__).parent / "cases"
CONTACTS: Schema = parse_properties(
    json.loads((CASES / "contacts_properties.json").read_text()), "contacts")
COMPANIES: Schema = parse_properties([
    {"name": "domain", "label": "Company Domain Name", "type": "string", "fieldType": "text",
     "hasUniqueValue": True},
    {"name": "hs_additional_domains", "label": "Additional Domains", "type": "string",
     "fieldType": "text"},
    {"name": "website", "label": "Website URL", "type": "string", "fieldType": "text"},
    {"name": "work_email", "label": "Work email", "type": "string", "fieldType": "text"},
], "companies")


def clean(schema: Schema, prop: str, values: list[str | None],
          column: ColumnOptions | None = None, **options: object) -> list[str | None]:
    """One column through `normalize`: each value as sent (None: nothing to send), or
    `!CODE` when rejected."""
    target = Target(prop, column="x", options=column or ColumnOptions())
    plan = expressions(schema, ResolvedMapping((target,)),
                       NormalizeOptions(object_rules=False, **options))  # type: ignore[arg-type]
    frame = pl.DataFrame({"source_row": range(1, len(values) + 1), "x": values},
                         schema={"source_row": pl.Int64, "x": pl.String})
    valid, rejects = normalize(frame, plan)
    out: dict[int, str | None] = dict.fromkeys(range(1, len(values) + 1))
    out.update(zip(valid["source_row"], valid[prop], strict=True))
    out.update((row, "!" + code) for row, code in zip(rejects["source_row"], rejects["code"],
                                                      strict=True) if code != "NO_VALUES")
    return [out[row] for row in range(1, len(values) + 1)]


# --- normalize: trimming ----------------------------------------------------------------


def test_every_value_loses_surrounding_whitespace_of_any_kind() -> None:
    padded = [" 01234 ", "\u00a0Paris\u202f", "\tLyon\t", "a  b", "  ", "\u00a0\u202f"]
    assert clean(CONTACTS, "city", padded) == ["01234", "Paris", "Lyon", "a  b", None, None]
    # empty once trimmed follows --empty
    assert clean(CONTACTS, "city", ["  ", "\t"], empty="clear") == ["", ""]
    assert clean(CONTACTS, "lifecyclestage", ["\u00a0Lead "]) == ["lead"]


def test_trim_false_keeps_a_text_value_as_given() -> None:
    keep = ColumnOptions(trim=False)
    assert clean(CONTACTS, "notes_text", ["  indented", "tail\t"], keep) == ["  indented",
                                                                            "tail\t"]
    # typed values cannot hold surrounding spaces: they are read without them anyway
    assert clean(CONTACTS, "annualrevenue", [" 12 "], keep) == ["12"]


# --- normalize: e-mails, domains, amounts --------------------------------------------------


def test_emails_are_trimmed_lower_cased_and_checked_locally() -> None:
    values = [" user@example.org ", "Ann.Smith@Example.COM", "bad@", "a b@example.org",
              "x@y", "first,last@example.org"]
    assert clean(CONTACTS, "email", values) == [
        "user@example.org", "ann.smith@example.com", "!INVALID_EMAIL", "!INVALID_EMAIL",
        "!INVALID_EMAIL", "!INVALID_EMAIL"]
    # HubSpot has no e-mail type: a string property named *_email holds one too
    assert clean(COMPANIES, "work_email", ["Boss@Acme.DE", "nope"]) == ["boss@acme.de",
                                                                       "!INVALID_EMAIL"]


def test_an_invalid_email_is_reported_with_its_column_and_value() -> None:
    plan = expressions(CONTACTS, ResolvedMapping((Target("email", column="E-mail"),
                                                  Target("firstname", column="Name"))),
                       NormalizeOptions())
    frame = pl.DataFrame({"source_row": [1, 2], "E-mail": [" ok@example.org", " not-an-email "],
                          "Name": ["A", "B"]})
    valid, rejects = normalize(frame, plan)
    assert valid["email"].to_list() == ["ok@example.org"]
    assert rejects.select("source_row", "column", "value", "code").rows() == [
        (2, "E-mail", " not-an-email ", "INVALID_EMAIL")]
    assert "'not-an-email' is not a valid e-mail address for email" in rejects["message"][0]


def test_domains_lose_scheme_www_port_path_and_case() -> None:
    values = [" https://www.Acme.de:443/about ", "WWW.globex.COM", "initech.io.", "http://",
              "user@mail.example.org/x?y#z"]
    assert clean(COMPANIES, "domain", values) == [
        "acme.de", "globex.com", "initech.io", "!INVALID_DOMAIN", "mail.example.org"]
    assert clean(COMPANIES, "hs_additional_domains",
                 ["https://www.a.com/x; WWW.B.com ;a.com;", "; ;"]) == ["a.com;b.com",
                                                                     "!INVALID_DOMAIN"]
    # a website is a URL: only trimmed
    assert clean(COMPANIES, "website", [" https://www.Acme.de/about "]) == [
        "https://www.Acme.de/about"]


@pytest.mark.parametrize(("value", "expected", "options"), [
    ("€ 4.000", "4000", {"thousands": ".", "decimal": ","}),
    ("4.000 €", "4000", {"thousands": ".", "decimal": ","}),
    ("-€1.234,5", "-1234.5", {"thousands": ".", "decimal": ","}),
    ("EUR 1.234.567,89", "1234567.89", {"thousands": ".", "decimal": ","}),
    ("4 000,50 €", "4000.5", {"thousands": " ", "decimal": ","}),
    ("4\u00a0000,50\u00a0€", "4000.5", {"thousands": " ", "decimal": ","}),
    ("4\u202f000 CHF", "4000", {"thousands": " ", "decimal": ","}),
    ("$1,234.50", "1234.5", {}),
    ("US$ 12", "12", {}),
    ("12 usd", "12", {}),
    ("£ 7", "7", {}),
    ("¥1,000", "1000", {}),
])
def test_amounts_with_currencies_parse_by_the_locale_options(
        value: str, expected: str, options: dict[str, object]) -> None:
    assert clean(CONTACTS, "annualrevenue", [value], **options) == [expected]


def test_a_currency_alone_or_around_junk_is_no_number() -> None:
    # a currency code is a word of its own: "try5" is not 5 Turkish lira
    assert clean(CONTACTS, "annualrevenue", ["€", "€ 12 abc", "try5", "TRY 5"]) == [
        "!INVALID_NUMBER", "!INVALID_NUMBER", "!INVALID_NUMBER", "5"]


@pytest.mark.parametrize("empty", ["skip", "clear"])
def test_cleaning_gives_the_same_on_every_evaluation_path(empty: str) -> None:
    columns = {
        "email": [" A@Example.co ", "a@example.co", "  ", "bad x", None, "\tX@Y.ORG", "b@c.d"],
        "annualrevenue": ["€ 4,000.50", "1,234", " 12 ", "$", None, "USD 7", "12 EUR "],
        "city": [" Paris", "Paris", "\u00a0", None, "x", "  y  ", "z"],
    }
    mapping = ResolvedMapping(tuple(Target(p, column=p) for p in columns))
    frame = pl.DataFrame({"source_row": range(1, 8), **columns})
    fast = expressions(CONTACTS, mapping, NormalizeOptions(empty=empty))  # type: ignore[arg-type]
    slow = replace(fast, distinct_share=0.0, fast_paths=False)
    for got, want in zip(normalize(frame, fast), normalize(frame, slow), strict=True):
        assert_frame_equal(got, want)
    assert normalize(frame, fast)[0]["email"].to_list()[:2] == ["a@example.co"] * 2


# --- value maps ---------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def plan_for(mapping_file: Path, headers: list[str], **options: object):
    resolved = resolve_mapping(MappingSpec(file=mapping_file), headers, CONTACTS)
    return expressions(CONTACTS, resolved,
                       NormalizeOptions(object_rules=False, **options))  # type: ignore[arg-type]


def test_value_maps_match_trimmed_ignoring_case_then_follow_the_property_rule(
        tmp_path: Path) -> None:
    mapping = write(tmp_path / "map.toml", """
[columns."Lifecycle Stage"]
property = "lifecyclestage"
values = { MQL = "marketingqualifiedlead", SQL = "Sales Qualified Lead", "n/a" = "" }

[columns.Hobbies]
property = "interests"
values = { footy = "Sports", tunes = "music" }

[values.annualrevenue]
"a lot" = 1000000
""")
    plan = plan_for(mapping, ["Lifecycle Stage", "Hobbies", "Annual Revenue"])
    frame = pl.DataFrame({
        "source_row": [1, 2, 3, 4, 5],
        "Lifecycle Stage": [" mql ", "SQL", "Lead", "N/A", "Prospect"],
        "Hobbies": ["Footy, tunes", "TUNES", "travel", None, None],
        "Annual Revenue": ["A Lot", "12", None, None, None],
    })
    valid, rejects = normalize(frame, plan)
    assert valid.rows() == [
        (1, "marketingqualifiedlead", "sports;music", "1000000"),
        (2, "salesqualifiedlead", "music", "12"),
        (3, "lead", "travel", None),
    ]
    assert rejects.select("source_row", "column", "value", "code").rows() == [
        (4, None, None, "NO_VALUES"),  # "n/a" maps to nothing: the row has no value left
        (5, "Lifecycle Stage", "Prospect", "INVALID_OPTION"),
    ]


def test_a_columns_own_entries_win_over_the_run_wide_map(tmp_path: Path) -> None:
    mapping = write(tmp_path / "map.toml", """
[columns.Stage]
property = "lifecyclestage"
values = { hot = "opportunity" }

[values.lifecyclestage]
hot = "lead"
warm = "subscriber"
""")
    plan = plan_for(mapping, ["Stage"])
    frame = pl.DataFrame({"source_row": [1, 2], "Stage": ["Hot", "warm"]})
    assert normalize(frame, plan)[0]["lifecyclestage"].to_list() == ["opportunity",
                                                                    "subscriber"]


@pytest.mark.parametrize(("table", "column"), [
    ('[columns."Lifecycle Stage"]\nproperty = "lifecyclestage"\n'
     'values = { MQL = "superhot" }\n', "Lifecycle Stage"),
    ('[values.lifecyclestage]\nMQL = "superhot"\n', "Lifecycle Stage"),
])
def test_a_value_map_to_a_value_the_property_refuses_is_a_config_error(
        tmp_path: Path, table: str, column: str) -> None:
    mapping = write(tmp_path / "map.toml", table)
    with pytest.raises(ConfigError) as caught:
        plan_for(mapping, ["Lifecycle Stage"])
    message = str(caught.value)
    assert str(mapping) in message and repr(column) in message
    assert "'MQL' -> 'superhot'" in message
    assert "marketingqualifiedlead" in message  # what it could map to instead


@pytest.mark.parametrize(("column_table", "fragment"), [
    ('{ property = "city", trim = "no" }', "trim must be true or false"),
    ('{ property = "city", values = "MQL" }', "values must be a table"),
    ('{ property = "city", values = { a = "x", " A " = "y" } }', "two values"),
    ('{ property = "city", values = { a = [1] } }', "must give a plain value"),
])
def test_bad_cleaning_options_in_a_mapping_file(tmp_path: Path, column_table: str,
                                                fragment: str) -> None:
    mapping = write(tmp_path / "map.toml", f"[columns]\nCity = {column_table}\n")
    with pytest.raises(ConfigError, match=fragment):
        plan_for(mapping, ["City"])


# --- the CLI against the sandbox --------------------------------------------------------


def run(tmp_path: Path, sandbox, source: Path, *extra: str) -> tuple[int, dict]:
    summary = tmp_path / "summary.json"
    code = main(["import", str(source), "--base-url", sandbox.base_url, "--rate", "none",
                 "--checkpoint", str(tmp_path / "cp" / "job.db"), "--summary", str(summary),
                 "--quiet", *extra])
    return code, orjson.loads(summary.read_bytes()) if summary.exists() else {}


def by_email(sandbox) -> dict[str, dict[str, str]]:
    return {r["properties"]["email"]: r["properties"] for r in sandbox.records("contacts")}


MESSY_HEADER = ["Email", "First Name", "Last Name", "Lifecycle Stage", "Total Revenue",
                "Website URL", "City", "Owner", "Employer Domain"]
MESSY_ROWS = [
    [" Ann@Example.COM ", " Ann ", "Smith\u00a0", " MQL ", "€ 4.000",
     " https://www.acme.de/about ", "\tParis ", " Alice.Martin@EXAMPLE.com ",
     "https://www.Acme.de/about "],
    [" user@example.org ", "Bob ", " Jones", "sql", "4.000,50 €", "", " Lyon",
     "bruno.keller@example.com", " initech.io"],
    ["BAD@ ", "Carl", "Bad", "Lead", "12", "", "", "", ""],
    ["Dan@Example.NET", "Dan ", " Dee", "customer ", "EUR 1.234.567,89", "initech.io", "",
     "", "HTTP://INITECH.IO:443/x"],
    ["eve@example.net", "Eve", "X", "subscriber", "lots", "", "", "", ""],
    ["fay@example.net\t", "Fay", "Y", "Prospect", "", "", "", "", ""],
    ["ann@example.com", "Annie", "Smith", "lead", "", "", "", "", ""],  # row 1's key again
]
MESSY_MAPPING = """
[columns]
Owner = "hubspot_owner_id"

[columns."Lifecycle Stage"]
property = "lifecyclestage"
values = { MQL = "marketingqualifiedlead", SQL = "Sales Qualified Lead" }
"""


def test_a_messy_contacts_file_imports_with_no_server_side_reject(tmp_path, sandbox_env):
    """Issue 15's messy file: spaces everywhere, mixed-case e-mails, amounts with a
    currency, a stage by a value map, owners by e-mail, employers by a domain given with
    scheme, `www.`, port and path, a key given twice. Every reject is local."""
    sandbox = sandbox_env(rate_requests=None)
    seed_companies(sandbox, ["acme.de", "initech.io"])
    source = write_csv(tmp_path / "contacts.csv", MESSY_HEADER, MESSY_ROWS)
    mapping = write(tmp_path / "map.toml", MESSY_MAPPING)
    rejects = tmp_path / "rejects.csv"
    code, summary = run(tmp_path, sandbox, source, "--object", "contacts", "--mode", "upsert",
                        "--id-property", "email", "--mapping", str(mapping),
                        "--associate", "companies:domain=Employer Domain",
                        "--thousands", ".", "--decimal", ",", "--rejects", str(rejects))
    assert code == 1
    assert (summary["rows_read"], summary["created"], summary["rejected"]) == (7, 3, 4)
    # nothing the server refused: every answer was a plain success
    assert set(sandbox.audit()["statuses"]) <= {"200", "201"}
    stored = by_email(sandbox)
    assert set(stored) == {"ann@example.com", "user@example.org", "dan@example.net"}
    ann = stored["ann@example.com"]
    assert (ann["firstname"], ann["lastname"], ann["city"]) == ("Ann", "Smith", "Paris")
    assert ann["lifecyclestage"] == "marketingqualifiedlead"
    assert float(ann["total_revenue"]) == 4000
    assert ann["website"] == "https://www.acme.de/about"  # a URL stays a URL
    assert ann["hubspot_owner_id"] == "41629779"  # Alice Martin, by e-mail
    assert stored["user@example.org"]["hubspot_owner_id"] == "52384011"
    assert stored["user@example.org"]["lifecyclestage"] == "salesqualifiedlead"
    assert float(stored["user@example.org"]["total_revenue"]) == 4000.5
    assert float(stored["dan@example.net"]["total_revenue"]) == 1234567.89
    assert edges(sandbox, "contacts", "companies", "email", "domain") == {
        ("ann@example.com", "acme.de"), ("user@example.org", "initech.io"),
        ("dan@example.net", "initech.io")}
    table = pl.read_csv(rejects, infer_schema=False)
    assert table.select("hsbulk_source_row", "hsbulk_column", "hsbulk_value",
                        "hsbulk_code").rows() == [
        ("3", "Email", "BAD@ ", "INVALID_EMAIL"),
        ("5", "Total Revenue", "lots", "INVALID_NUMBER"),
        ("6", "Lifecycle Stage", "Prospect", "INVALID_OPTION"),
        ("7", "Email", "ann@example.com", "DUPLICATE_KEY"),
    ]
    assert all(m and not m.lstrip().startswith(("{", "[")) for m in table["hsbulk_message"])


def test_a_value_map_at_the_cli_run_wide_and_to_a_label(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    source = write_csv(tmp_path / "contacts.csv", ["Email", "Stage"],
                       [["a@example.org", "MQL"], ["b@example.org", " hot "],
                        ["c@example.org", "Lead"]])
    mapping = write(tmp_path / "map.toml", """
[columns]
Stage = "lifecyclestage"

[values.lifecyclestage]
MQL = "marketingqualifiedlead"
HOT = "Sales Qualified Lead"
""")
    code, summary = run(tmp_path, sandbox, source, "--object", "contacts", "--mode", "upsert",
                        "--id-property", "email", "--mapping", str(mapping))
    assert code == 0 and summary["created"] == 3
    stages = {e: p["lifecyclestage"] for e, p in by_email(sandbox).items()}
    assert stages == {"a@example.org": "marketingqualifiedlead",
                      "b@example.org": "salesqualifiedlead", "c@example.org": "lead"}


def test_a_value_map_to_an_unknown_option_stops_before_any_write(tmp_path, sandbox_env,
                                                                   capsys):
    sandbox = sandbox_env(rate_requests=None)
    source = write_csv(tmp_path / "contacts.csv", ["Email", "Lifecycle Stage"],
                       [["a@example.org", "MQL"]])
    mapping = write(tmp_path / "map.toml", '[columns."Lifecycle Stage"]\n'
                    'property = "lifecyclestage"\nvalues = { MQL = "superhot" }\n')
    code, _ = run(tmp_path, sandbox, source, "--object", "contacts", "--mode", "upsert",
                  "--id-property", "email", "--mapping", str(mapping))
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hsbulk: error: ")
    assert str(mapping) in err[0] and "'Lifecycle Stage'" in err[0]
    assert "MQL" in err[0] and "superhot" in err[0]
    assert sandbox.records("contacts") == []


def test_trim_false_sends_a_column_as_given(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    source = write_csv(tmp_path / "contacts.csv", ["Email", "Message", "City"],
                       [[" a@example.org ", "  - first item", "  Paris  "]])
    mapping = write(tmp_path / "map.toml",
                    '[columns]\nMessage = { property = "message", trim = false }\n')
    code, _ = run(tmp_path, sandbox, source, "--object", "contacts", "--mode", "upsert",
                  "--id-property", "email", "--mapping", str(mapping))
    assert code == 0
    stored = by_email(sandbox)["a@example.org"]
    assert (stored["message"], stored["city"]) == ("  - first item", "Paris")


def test_company_domains_are_cleaned_before_they_are_sent(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    source = write_csv(tmp_path / "companies.csv", ["Domain", "Name", "Annual Revenue"], [
        [" https://www.Acme.de:443/about ", "Acme", "$1,234.50"],
        ["WWW.Globex.COM", "Globex", "USD 12"],
        ["http://initech.io/", "Initech", ""],
        ["https://", "Nobody", ""],
    ])
    rejects = tmp_path / "rejects.csv"
    code, summary = run(tmp_path, sandbox, source, "--object", "companies", "--mode", "upsert",
                        "--id-property", "domain", "--map", "Domain=domain",
                        "--map", "Name=name", "--rejects", str(rejects))
    assert code == 1 and summary["created"] == 3
    stored = {r["properties"]["domain"]: r["properties"] for r in sandbox.records("companies")}
    assert set(stored) == {"acme.de", "globex.com", "initech.io"}
    assert float(stored["acme.de"]["annualrevenue"]) == 1234.5
    table = pl.read_csv(rejects, infer_schema=False)
    assert table.select("hsbulk_column", "hsbulk_value", "hsbulk_code").rows() == [
        ("Domain", "https://", "INVALID_DOMAIN")]
