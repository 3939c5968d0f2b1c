"""The dry run over a small file: counts, rejects file, normalized file, plan."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine.dryrun import run_dry
from engine.errors import ConfigError
from engine.mapping import MappingSpec
from engine.normalize import NormalizeOptions
from engine.schema import parse_properties
from engine.source import SourceSpec

CASES = Path(__file__).parent / "cases"
SCHEMA = parse_properties(json.loads((CASES / "contacts_properties.json").read_text()),
                          "contacts")
MAPPING = MappingSpec(pairs=(("Stage", "lifecyclestage"), ("Revenue", "annualrevenue")))


def read(path: Path, row: str = "source_row") -> pl.DataFrame:
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    return pl.read_csv(path, infer_schema=False).with_columns(pl.col(row).cast(pl.Int64))


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_dry_run_counts_and_files(tmp_path: Path, ext: str) -> None:
    rejects, normalized = tmp_path / f"rejects.{ext}", tmp_path / f"normalized.{ext}"
    plan = run_dry(SourceSpec(str(CASES / "contacts_small.csv")), SCHEMA, MAPPING,
                   NormalizeOptions(), rejects_path=rejects, normalized_path=normalized,
                   rate_per_10s=190, daily_quota=250_000)
    assert (plan.rows_read, plan.rows_valid, plan.rows_rejected) == (4, 1, 3)
    assert plan.exit_code == 1
    assert plan.date_order == "DMY"   # 25/12/1990 decides it
    assert plan.api_calls == 1 and plan.seconds_at_rate == pytest.approx(10 / 190)
    assert plan.unmapped == ("Comment",)
    assert set(plan.reject_reasons) == {("INVALID_DATE", "Date of birth", 1),
                                        ("MISSING_REQUIRED", "Email, First Name", 1),
                                        ("INVALID_OPTION", "Stage", 1),
                                        ("INVALID_OPTION", "Interests", 1)}
    assert_frame_equal(read(normalized), pl.DataFrame({
        "source_row": [1], "email": ["a@x.io"], "firstname": ["Ann"],
        "date_of_birth": ["1990-12-25"], "lifecyclestage": ["lead"],
        "interests": ["music;travel"], "annualrevenue": ["1234.5"]}))
    got = read(rejects, "hsbulk_source_row")
    assert got.columns == ["hsbulk_source_row", "hsbulk_column", "hsbulk_value", "hsbulk_code",
                           "hsbulk_message", "Email", "First Name", "Date of birth", "Stage",
                           "Interests", "Revenue", "Comment"]
    assert got.select("hsbulk_source_row", "hsbulk_column", "hsbulk_value",
                      "hsbulk_code").rows() == [
        (2, "Date of birth", "1990-02-30", "INVALID_DATE"),
        (3, "Email, First Name", None, "MISSING_REQUIRED"),
        (4, "Stage", "Prospect", "INVALID_OPTION"),
        (4, "Interests", "zzz", "INVALID_OPTION"),
    ]
    assert got.filter(pl.col("hsbulk_source_row") == 3)["Comment"].to_list() == ["only notes"]
    assert got["hsbulk_message"][0].startswith("'1990-02-30' is not a valid date for date_of_birth")
    text = plan.render()
    assert "Valid: 1   Rejected: 3" in text and "Date order: DMY" in text


def test_ambiguous_dates_ask_for_the_order(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("Email,Date of birth\na@x.io,03/04/1990\nb@x.io,05/06/1991\n")
    with pytest.raises(ConfigError, match="set date_order to DMY or MDY"):
        run_dry(SourceSpec(str(path)), SCHEMA, MappingSpec())
    plan = run_dry(SourceSpec(str(path)), SCHEMA, MappingSpec(),
                   NormalizeOptions(date_order="MDY"), normalized_path=tmp_path / "n.csv")
    assert plan.exit_code == 0
    assert read(tmp_path / "n.csv")["date_of_birth"].to_list() == ["1990-03-04", "1991-05-06"]
