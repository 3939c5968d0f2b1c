"""Value rules, row rules and the properties every batch must keep."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from engine.errors import ConfigError
from engine.mapping import ColumnOptions, ResolvedMapping, Target
from engine.normalize import NormalizeOptions, expressions, normalize, rejected_rows
from engine.schema import Schema, parse_properties

CASES = Path(__file__).parent / "cases"
SCHEMA: Schema = parse_properties(json.loads((CASES / "contacts_properties.json").read_text()),
                                  "contacts")


def run_one(prop: str, values: list[str | None], column_options: ColumnOptions | None = None,
            **options: object) -> list[str | None]:
    """Normalise one column; each value comes back normalised, or as `!CODE` when rejected."""
    target = Target(prop, column="x", options=column_options or ColumnOptions())
    plan = expressions(SCHEMA, ResolvedMapping((target, Target("email", column="e"))),
                       NormalizeOptions(object_rules=False, **options))  # type: ignore[arg-type]
    frame = pl.DataFrame({"source_row": range(1, len(values) + 1), "x": values,
                          "e": ["a@b.c"] * len(values)},
                         schema={"source_row": pl.Int64, "x": pl.String, "e": pl.String})
    valid, rejects = normalize(frame, plan)
    out: dict[int, str | None] = dict(zip(valid["source_row"], valid[prop], strict=True))
    for row, code in zip(rejects["source_row"], rejects["code"], strict=True):
        out[row] = "!" + code
    return [out[row] for row in range(1, len(values) + 1)]


@pytest.mark.parametrize(("prop", "value", "expected", "options"), [
    # date
    ("date_of_birth", "2024-02-29", "2024-02-29", {}),
    ("date_of_birth", "2023-02-29", "!INVALID_DATE", {}),
    ("date_of_birth", "2023-13-01", "!INVALID_DATE", {}),
    ("date_of_birth", "03/04/2024", "2024-04-03", {"date_order": "DMY"}),
    ("date_of_birth", "03/04/2024", "2024-03-04", {"date_order": "MDY"}),
    ("date_of_birth", "03/04/2024", "!AMBIGUOUS_DATE", {}),
    ("date_of_birth", "25/04/2024", "2024-04-25", {}),
    ("date_of_birth", "04/25/2024", "2024-04-25", {}),
    ("date_of_birth", "04/25/2024", "!INVALID_DATE", {"date_order": "DMY"}),
    ("date_of_birth", "31.12.2024", "2024-12-31", {"date_order": "DMY"}),
    ("date_of_birth", "5 Mar 2024", "2024-03-05", {}),
    ("date_of_birth", "05 march 2024", "2024-03-05", {}),
    ("date_of_birth", "March 5, 2024", "2024-03-05", {}),
    ("date_of_birth", " 2024-03-05 ", "2024-03-05", {}),
    ("date_of_birth", "2024-03-05T00:00:00Z", "2024-03-05", {}),
    ("date_of_birth", "2024-03-05T00:00:00.000Z", "2024-03-05", {}),
    ("date_of_birth", "2024-03-05T10:30:00Z", "!INVALID_DATE", {}),
    ("date_of_birth", "2024-03-05T00:00:00+02:00", "!INVALID_DATE", {}),
    ("date_of_birth", "1709596800000", "2024-03-05", {}),   # epoch ms, midnight
    ("date_of_birth", "1709596800", "2024-03-05", {}),      # epoch s, midnight
    ("date_of_birth", "1709600000000", "!INVALID_DATE", {}),  # not midnight
    ("date_of_birth", "2024-03-05", "1709596800000", {"dates": "epoch-ms"}),
    ("date_of_birth", "5 Mar 2024", "1709596800000", {"dates": "epoch-ms"}),
    ("date_of_birth", "yesterday", "!INVALID_DATE", {}),
    # datetime
    ("last_contacted", "2024-03-05T14:30:00Z", "2024-03-05T14:30:00.000Z", {}),
    ("last_contacted", "2024-03-05T14:30:00.5+01:00", "2024-03-05T13:30:00.500Z", {}),
    ("last_contacted", "2024-03-05 14:30", "2024-03-05T14:30:00.000Z", {}),
    ("last_contacted", "2024-03-05 14:30", "2024-03-05T13:30:00.000Z",
     {"timezone": "Europe/Paris"}),
    ("last_contacted", "2024-07-05T14:30:00", "2024-07-05T12:30:00.000Z",
     {"timezone": "Europe/Paris"}),
    ("last_contacted", "2024-03-31 02:30", "!INVALID_DATETIME", {"timezone": "Europe/Paris"}),
    # ambiguous autumn hour: the earlier instant (still summer time, UTC+2)
    ("last_contacted", "2024-10-27 02:30", "2024-10-27T00:30:00.000Z",
     {"timezone": "Europe/Paris"}),
    ("last_contacted", "2024-03-05T14:30:00+02:00", "2024-03-05T12:30:00.000Z",
     {"timezone": "Europe/Paris"}),
    ("last_contacted", "1709649000", "2024-03-05T14:30:00.000Z", {}),
    ("last_contacted", "1709649000000", "2024-03-05T14:30:00.000Z", {}),
    ("last_contacted", "1709649000123", "2024-03-05T14:30:00.123Z", {}),
    ("last_contacted", "2024-03-05T14:30:00Z", "1709649000000", {"dates": "epoch-ms"}),
    ("last_contacted", "2024-03-05", "2024-03-05T00:00:00.000Z", {}),
    ("last_contacted", "2024-02-30T10:00:00Z", "!INVALID_DATETIME", {}),
    ("last_contacted", "noon", "!INVALID_DATETIME", {}),
    # bool
    ("newsletter_opt_in", "Yes", "true", {}),
    ("newsletter_opt_in", "N", "false", {}),
    ("newsletter_opt_in", "1", "true", {}),
    ("newsletter_opt_in", "off", "false", {}),
    ("newsletter_opt_in", "CHECKED", "true", {}),
    ("newsletter_opt_in", "maybe", "!INVALID_BOOL", {}),
    # enumeration (radio)
    ("lifecyclestage", "Marketing Qualified Lead", "marketingqualifiedlead", {}),
    ("lifecyclestage", "marketing qualified lead", "marketingqualifiedlead", {}),
    ("lifecyclestage", "lead", "lead", {}),
    ("lifecyclestage", "Prospect", "!INVALID_OPTION", {}),
    ("hs_pipeline_stage", "anything-goes", "anything-goes", {}),  # externalOptions
    # multi-checkbox
    ("interests", "a, b | a", "a;b", {}),
    ("interests", "Alpha;Gamma", "a;c", {}),
    ("interests", "b,a", "b;a", {}),
    ("interests", "a;zzz", "!INVALID_OPTION", {}),
    ("interests", "a, b", ";a;b", {"checkbox": "append"}),
    ("interests", "a|b", "!INVALID_OPTION", {"separators": ";"}),
    # number
    ("annualrevenue", "1,234.50", "1234.5", {}),
    ("annualrevenue", "1 234", "1234", {}),
    ("annualrevenue", "1.5e3", "1500", {}),
    ("annualrevenue", "-0.50", "-0.5", {}),
    ("annualrevenue", "007", "7", {}),
    ("annualrevenue", "12345678901234567890", "12345678901234567890", {}),
    ("annualrevenue", "1.234,5", "1234.5", {"thousands": ".", "decimal": ","}),
    ("annualrevenue", "NaN", "!INVALID_NUMBER", {}),
    ("annualrevenue", "inf", "!INVALID_NUMBER", {}),
    ("annualrevenue", "1e999", "!INVALID_NUMBER", {}),
    ("annualrevenue", "12abc", "!INVALID_NUMBER", {}),
    # string
    ("zip", "01234", "01234", {}),
    ("notes_text", "x" * 65_536, "x" * 65_536, {}),
    ("notes_text", "x" * 65_537, "!VALUE_TOO_LONG", {}),
    ("notes_text", "  padded  ", "padded", {}),  # trimmed unless the column says trim = false
])
def test_value_rules(prop: str, value: str, expected: str, options: dict[str, object]) -> None:
    assert run_one(prop, [value], **options) == [expected]


def test_empty_is_omitted_by_default_and_cleared_on_request() -> None:
    assert run_one("date_of_birth", [None, "  "]) == [None, None]
    assert run_one("date_of_birth", [None, "  "], empty="clear") == ["", ""]
    assert run_one("zip", [None], column_options=ColumnOptions(empty="clear")) == [""]


def test_column_options_override_run_options() -> None:
    opts = ColumnOptions(date_order="MDY")
    assert run_one("date_of_birth", ["03/04/2024"], column_options=opts,
                   date_order="DMY") == ["2024-03-04"]


def test_reject_messages_name_what_is_valid() -> None:
    target = Target("lifecyclestage", column="Stage")
    plan = expressions(SCHEMA, ResolvedMapping((Target("email", column="e"), target)))
    frame = pl.DataFrame({"source_row": [7], "e": ["a@b.c"], "Stage": ["Prospect"]})
    _, rejects = normalize(frame, plan)
    expected = pl.DataFrame({
        "source_row": [7], "column": ["Stage"], "value": ["Prospect"],
        "code": ["INVALID_OPTION"],
        "message": ["'Prospect' is not an option of lifecyclestage; valid values of "
                    "lifecyclestage: subscriber, lead, marketingqualifiedlead, "
                    "salesqualifiedlead, opportunity, customer, evangelist, other "
                    "(or their labels)"]})
    assert_frame_equal(rejects, expected, check_dtypes=False)


def test_dst_gap_message_says_why() -> None:
    plan = expressions(SCHEMA, ResolvedMapping((Target("email", column="e"),
                                                Target("last_contacted", column="t"))),
                       NormalizeOptions(timezone="Europe/Paris"))
    frame = pl.DataFrame({"source_row": [1], "e": ["a@b.c"], "t": ["2024-03-31 02:30"]})
    _, rejects = normalize(frame, plan)
    assert rejects["message"][0] == ("'2024-03-31 02:30' does not exist in Europe/Paris "
                                     "(clocks move forward then): fix the time or give a "
                                     "UTC offset")


def test_whole_frame_and_row_rules() -> None:
    mapping = ResolvedMapping((
        Target("email", column="Email"), Target("firstname", column="First"),
        Target("date_of_birth", column="DOB"), Target("lifecyclestage", column="Stage")))
    plan = expressions(SCHEMA, mapping, NormalizeOptions(date_order="DMY"))
    frame = pl.DataFrame({
        "source_row": [1, 2, 3, 4, 5],
        "Email": ["a@x.io", None, None, "d@x.io", None],
        "First": ["Ann", "Bob", None, None, None],
        "DOB": ["03/04/1990", "1990-02-30", "1990-01-01", None, None],
        "Stage": ["Lead", "Customer", "lead", "nope", None],
    })
    valid, rejects = normalize(frame, plan)
    assert_frame_equal(valid, pl.DataFrame({
        "source_row": [1], "email": ["a@x.io"], "firstname": ["Ann"],
        "date_of_birth": ["1990-04-03"], "lifecyclestage": ["lead"]}))
    assert rejects.select("source_row", "column", "code").rows() == [
        (2, "DOB", "INVALID_DATE"),
        (3, "Email, First", "MISSING_REQUIRED"),
        (4, "Stage", "INVALID_OPTION"),
        (5, None, "NO_VALUES"),
    ]
    assert rejected_rows(rejects, valid) == 4


def test_drop_field_sends_the_rest_of_the_row() -> None:
    mapping = ResolvedMapping((Target("email", column="Email"),
                               Target("date_of_birth", column="DOB")))
    plan = expressions(SCHEMA, mapping, NormalizeOptions(on_invalid="drop-field"))
    frame = pl.DataFrame({"source_row": [1], "Email": ["a@x.io"], "DOB": ["bad"]})
    valid, rejects = normalize(frame, plan)
    assert valid.rows() == [(1, "a@x.io", None)]
    assert rejects["code"].to_list() == ["INVALID_DATE"]
    assert rejects["message"][0].endswith("(field not sent)")


def test_constants_are_normalised_and_checked() -> None:
    mapping = ResolvedMapping((Target("email", column="e"),
                               Target("lifecyclestage", constant="Customer")))
    plan = expressions(SCHEMA, mapping)
    valid, _ = normalize(pl.DataFrame({"source_row": [1], "e": ["a@b.c"]}), plan)
    assert valid["lifecyclestage"].to_list() == ["customer"]
    with pytest.raises(ConfigError, match="constant 'Nope' for lifecyclestage"):
        expressions(SCHEMA, ResolvedMapping((Target("email", column="e"),
                                             Target("lifecyclestage", constant="Nope"))))


def test_contacts_need_an_identity_column() -> None:
    with pytest.raises(ConfigError, match="at least one of email, firstname, lastname"):
        expressions(SCHEMA, ResolvedMapping((Target("city", column="c"),)))


@pytest.mark.parametrize("options", [
    {"timezone": "Mars/Olympus"}, {"date_order": "DDD"}, {"empty": "never"},
    {"thousands": ".", "decimal": "."},
])
def test_bad_options_are_config_errors(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        NormalizeOptions(**options)  # type: ignore[arg-type]


# --- properties --------------------------------------------------------------------------

_MAPPING = ResolvedMapping(tuple(Target(p, column=p) for p in (
    "email", "firstname", "date_of_birth", "last_contacted", "newsletter_opt_in",
    "lifecyclestage", "interests", "annualrevenue", "zip")))
_CELLS = {
    "email": st.sampled_from([None, "a@b.c", "x"]),
    "firstname": st.sampled_from([None, "Ann", " "]),
    "date_of_birth": st.sampled_from([None, "2024-02-29", "2023-02-29", "03/04/2024",
                                      "25/12/2020", "5 Mar 2024", "1709596800000", "junk",
                                      "2024-03-05T10:00:00Z"]),
    "last_contacted": st.sampled_from([None, "2024-03-05T14:30:00Z", "2024-03-31 02:30",
                                       "2024-10-27 02:30", "1709649000", "bad"]),
    "newsletter_opt_in": st.sampled_from([None, "Yes", "n", "maybe", "true"]),
    "lifecyclestage": st.sampled_from([None, "Lead", "customer", "Prospect"]),
    "interests": st.sampled_from([None, "a, b | a", "Alpha;zzz", ";", "Music,Travel"]),
    "annualrevenue": st.sampled_from([None, "1,234.50", "NaN", "1.5e3", "-0", "x1"]),
    "zip": st.sampled_from([None, "01234", "  "]),
}
_ROWS = st.lists(st.fixed_dictionaries(_CELLS), min_size=0, max_size=30)
_OPTIONS = st.builds(NormalizeOptions,
                     date_order=st.sampled_from([None, "DMY", "MDY"]),
                     timezone=st.sampled_from(["UTC", "Europe/Paris", "America/New_York"]),
                     dates=st.sampled_from(["iso", "epoch-ms"]),
                     empty=st.sampled_from(["skip", "clear"]),
                     checkbox=st.sampled_from(["replace", "append"]))


def _frame(rows: list[dict[str, str | None]]) -> pl.DataFrame:
    schema = {"source_row": pl.Int64, **dict.fromkeys(_CELLS, pl.String)}
    return pl.DataFrame([{"source_row": i + 1, **row} for i, row in enumerate(rows)],
                        schema=schema)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_ROWS, options=_OPTIONS)
def test_every_row_is_either_valid_or_rejected(rows: list[dict[str, str | None]],
                                               options: NormalizeOptions) -> None:
    frame = _frame(rows)
    valid, rejects = normalize(frame, expressions(SCHEMA, _MAPPING, options))
    sent = set(valid["source_row"].to_list())
    refused = set(rejects["source_row"].to_list())
    assert sent.isdisjoint(refused)
    assert sorted(sent | refused) == frame["source_row"].to_list()
    assert valid.height + rejected_rows(rejects, valid) == frame.height


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_ROWS, options=_OPTIONS)
def test_normalising_twice_changes_nothing(rows: list[dict[str, str | None]],
                                           options: NormalizeOptions) -> None:
    plan = expressions(SCHEMA, _MAPPING, options)
    once, _ = normalize(_frame(rows), plan)
    twice, rejects = normalize(once, plan)
    assert rejects.height == 0
    assert_frame_equal(twice, once)
