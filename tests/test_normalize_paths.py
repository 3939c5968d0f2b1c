"""How a batch is evaluated never changes what it yields.

`normalize` may evaluate a column once per distinct value (`distinct_share`) and may try a
rule's common shapes first (`fast_paths`, the tiers); the reference is the whole rule on
every row (`distinct_share=0, fast_paths=False`). Every strategy must give the same valid
frame and the same rejects, row for row.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from engine.mapping import ResolvedMapping, Target
from engine.normalize import NormalizeOptions, NormalizePlan, expressions, normalize
from engine.schema import Schema, parse_properties

CASES = Path(__file__).parent / "cases"
SCHEMA: Schema = parse_properties(json.loads((CASES / "contacts_properties.json").read_text()),
                                  "contacts")
PROPERTIES = ("email", "date_of_birth", "last_contacted", "newsletter_opt_in",
              "lifecyclestage", "interests", "annualrevenue", "zip")
MAPPING = ResolvedMapping(tuple(Target(p, column=p) for p in PROPERTIES))
STRATEGIES = [(0.0, True), (1.0, False), (1.0, True), (0.5, True)]

# Values each rule takes by a tier, by the whole rule, or rejects; with blanks and nulls.
VALUES: dict[str, list[str | None]] = {
    "email": [None, "", "a@b.c", "x"],
    "date_of_birth": [None, "", "  ", "2024-02-29", "2023-02-29", "03/04/2024", "25/12/2020",
                      "12/25/2020", "31.12.2024", "31-12-2024", "5 Mar 2024", "March 5, 2024",
                      "2024/03/05", "05-Mar-2024", "1709596800000", "1709596800",
                      "2024-03-05T00:00:00Z", "2024-03-05T10:00:00Z", "junk", "2024-3-5",
                      "9999999999999999"],
    "last_contacted": [None, "", "2024-03-05T14:30:00Z", "2024-03-05T14:30:00.123Z",
                       "2024-03-05 14:30", "2024-03-05T14:30", "2024-03-05 14:30:15",
                       "2024-03-05T14:30:15", "2024-03-05T14:30:15.5+01:00",
                       "2024-03-31 02:30", "2024-10-27 02:30", "2024-03-05", "1709649000",
                       "1709649000123", "2024-02-30T10:00:00Z", "2024-03-05t14:30",
                       "bad", "9999999999999999"],
    "newsletter_opt_in": [None, "", "Yes", "n", "maybe", "TRUE", " off "],
    "lifecyclestage": [None, "", "Lead", "customer", "Prospect", " Marketing Qualified Lead "],
    "interests": [None, "", "a, b | a", "Alpha;zzz", ";", "Music,Travel", "b,a"],
    "annualrevenue": [None, "", "1,234.50", "1,234,567", "1234.5", "1234.50", "-0.00", "0.0",
                      "007.50", "NaN", "1.5e3", "-0", "x1", "+1,234", "1 234,50",
                      "12345678901234567890.10", "0.1234567890123456780", "12,34.0"],
    "zip": [None, "", "01234", "  "],
}


def _frame(rows: list[dict[str, str | None]]) -> pl.DataFrame:
    schema = {"source_row": pl.Int64, **dict.fromkeys(PROPERTIES, pl.String)}
    return pl.DataFrame([{"source_row": i + 1, **row} for i, row in enumerate(rows)],
                        schema=schema)


def _random_rows(n: int, distinct: int, seed: int) -> list[dict[str, str | None]]:
    """`distinct` values per column (low cardinality) or fresh picks per row (high)."""
    rng = random.Random(seed)
    pools = {p: [rng.choice(VALUES[p]) for _ in range(distinct)] for p in PROPERTIES}
    return [{p: rng.choice(pools[p]) for p in PROPERTIES} for _ in range(n)]


def _assert_same_everywhere(frame: pl.DataFrame, plan: NormalizePlan) -> None:
    reference = replace(plan, distinct_share=0.0, fast_paths=False)
    want_valid, want_rejects = normalize(frame, reference)
    for share, fast in STRATEGIES:
        valid, rejects = normalize(frame, replace(plan, distinct_share=share, fast_paths=fast))
        assert_frame_equal(valid, want_valid)
        assert_frame_equal(rejects, want_rejects)


@pytest.mark.parametrize("order", [None, "DMY", "MDY"])
@pytest.mark.parametrize(("rows", "distinct"), [(3000, 3), (3000, 40), (400, 400)])
def test_every_strategy_gives_the_reference_result(order: str | None, rows: int,
                                                   distinct: int) -> None:
    every_value = [{p: VALUES[p][i % len(VALUES[p])] for p in PROPERTIES}
                   for i in range(max(len(v) for v in VALUES.values()))]
    frame = _frame(every_value + _random_rows(rows, distinct, seed=rows + distinct))
    for options in (NormalizeOptions(date_order=order),  # type: ignore[arg-type]
                    NormalizeOptions(date_order=order, timezone="Europe/Paris",  # type: ignore[arg-type]
                                     dates="epoch-ms", empty="clear", checkbox="append",
                                     on_invalid="drop-field"),
                    NormalizeOptions(date_order=order, thousands=".", decimal=",")):  # type: ignore[arg-type]
        _assert_same_everywhere(frame, expressions(SCHEMA, MAPPING, options))


def test_rejects_of_repeated_values_name_each_source_row() -> None:
    frame = pl.DataFrame({
        "source_row": [11, 12, 13, 14, 15, 16],
        "email": ["a@b.c"] * 6,
        "lifecyclestage": ["Prospect", "lead", None, "Prospect", "", "Prospect"],
    })
    plan = expressions(SCHEMA, ResolvedMapping((Target("email", column="email"),
                                                Target("lifecyclestage",
                                                       column="lifecyclestage"))))
    for share in (0.0, 1.0):
        valid, rejects = normalize(frame, replace(plan, distinct_share=share))
        assert valid.rows() == [(12, "a@b.c", "lead"), (13, "a@b.c", None),
                                (15, "a@b.c", None)]
        assert rejects.select("source_row", "value", "code").rows() == [
            (11, "Prospect", "INVALID_OPTION"), (14, "Prospect", "INVALID_OPTION"),
            (16, "Prospect", "INVALID_OPTION")]


def test_values_left_by_the_tiers_still_get_the_whole_rule() -> None:
    """A naive time in a DST gap parses in a tier but does not exist: the rule rejects it
    with its reason; a grouped number with trailing zeros and an out-of-range epoch too."""
    mapping = ResolvedMapping((Target("email", column="e"),
                               Target("last_contacted", column="t"),
                               Target("annualrevenue", column="n"),
                               Target("date_of_birth", column="d")))
    plan = expressions(SCHEMA, mapping, NormalizeOptions(
        timezone="Europe/Paris", date_order="DMY", on_invalid="drop-field"))
    frame = pl.DataFrame({
        "source_row": [1, 2, 3],
        "e": ["a@b.c"] * 3,
        "t": ["2024-03-31 02:30", "2024-03-31 03:30", "9999999999999999"],
        "n": ["1,234.50", "-0.00", "1234567890123456789.10"],
        "d": ["5 Mar 2024", "9999999999999999", "31/02/1990"],
    })
    valid, rejects = normalize(frame, plan)
    assert valid.rows() == [
        (1, "a@b.c", None, "1234.5", "2024-03-05"),
        (2, "a@b.c", "2024-03-31T01:30:00.000Z", "0", None),
        (3, "a@b.c", None, "1234567890123456789.1", None),
    ]
    reasons = rejects.select("source_row", "column", "code").rows()
    assert reasons == [(1, "t", "INVALID_DATETIME"), (2, "d", "INVALID_DATE"),
                       (3, "t", "INVALID_DATETIME"), (3, "d", "INVALID_DATE")]
    assert rejects["message"][0].startswith("'2024-03-31 02:30' does not exist in Europe/Paris")


_ROWS = st.lists(st.fixed_dictionaries({p: st.sampled_from(VALUES[p]) for p in PROPERTIES}),
                 min_size=0, max_size=40)
_OPTIONS = st.builds(NormalizeOptions,
                     date_order=st.sampled_from([None, "DMY", "MDY"]),
                     timezone=st.sampled_from(["UTC", "Europe/Paris", "America/New_York"]),
                     dates=st.sampled_from(["iso", "epoch-ms"]),
                     empty=st.sampled_from(["skip", "clear"]),
                     on_invalid=st.sampled_from(["reject-row", "drop-field"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_ROWS, options=_OPTIONS)
def test_strategies_agree_on_any_batch(rows: list[dict[str, str | None]],
                                       options: NormalizeOptions) -> None:
    _assert_same_everywhere(_frame(rows), expressions(SCHEMA, MAPPING, options))
