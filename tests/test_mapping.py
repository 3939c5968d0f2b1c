"""Which column feeds which property: explicit, file, automatic; refusals with suggestions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.mapping import (
    ColumnOptions,
    MappingSpec,
    Target,
    parse_map_flag,
    resolve_mapping,
)
from engine.schema import parse_properties

CASES = Path(__file__).parent / "cases"
SCHEMA = parse_properties(json.loads((CASES / "contacts_properties.json").read_text()),
                          "contacts")


def test_map_flag_splits_on_the_last_equals() -> None:
    assert parse_map_flag("A=B Column=email") == ("A=B Column", "email")
    with pytest.raises(ConfigError, match="not of the form"):
        parse_map_flag("email")


def test_explicit_then_automatic_by_name_and_label() -> None:
    spec = MappingSpec.from_flags(["Mail=email"])
    got = resolve_mapping(spec, ["Mail", "FIRSTNAME", "last name", "Shoe size", "Record ID"],
                          SCHEMA)
    assert [(t.column, t.property) for t in got.targets] == [
        ("Mail", "email"), ("FIRSTNAME", "firstname"), ("last name", "lastname")]
    assert got.unmapped == ("Shoe size", "Record ID")
    assert got.notes == ("column 'Record ID' matches read-only property 'hs_object_id': "
                         "ignored",)


def test_mapping_file_with_options_and_constants() -> None:
    spec = MappingSpec(file=CASES / "mapping.toml")
    got = resolve_mapping(spec, ["E-mail Address", "Stage", "Hobbies"], SCHEMA)
    assert got.targets == (
        Target("email", column="E-mail Address"),
        Target("lifecyclestage", column="Stage"),
        Target("interests", column="Hobbies",
               options=ColumnOptions(checkbox="append", separators="/")),
        Target("city", constant="Paris"),
        Target("newsletter_opt_in", constant="true"),
    )


def test_explicit_flag_wins_over_the_file() -> None:
    spec = MappingSpec(pairs=(("Stage", "hs_pipeline_stage"),), file=CASES / "mapping.toml")
    got = resolve_mapping(spec, ["E-mail Address", "Stage", "Hobbies"], SCHEMA)
    assert ("Stage", "hs_pipeline_stage") in [(t.column, t.property) for t in got.targets]


def test_reserved_columns_are_never_properties() -> None:
    got = resolve_mapping(MappingSpec(reserved=frozenset({"Email"})), ["Email", "City"],
                          SCHEMA)
    assert [t.property for t in got.targets] == ["city"]
    assert got.reserved == ("Email",) and got.unmapped == ()


@pytest.mark.parametrize(("flag", "message"), [
    ("Mail=emial", "column 'Mail' -> 'emial': unknown property; did you mean email?"),
    ("Mail=createdate", "column 'Mail' -> 'createdate': read-only property"),
    ("Mail=days_to_close", "column 'Mail' -> 'days_to_close': calculated property"),
    ("Mial=email", "column 'Mial' is not in the file; did you mean 'Mail'?"),
])
def test_bad_targets_are_config_errors_with_suggestions(flag: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_mapping(MappingSpec.from_flags([flag]), ["Mail"], SCHEMA)
    assert message in str(caught.value)


def test_ignore_unknown_drops_bad_targets() -> None:
    spec = MappingSpec.from_flags(["Mail=emial", "Name=firstname"], ignore_unknown=True)
    got = resolve_mapping(spec, ["Mail", "Name"], SCHEMA)
    assert [t.property for t in got.targets] == ["firstname"]
    assert got.ignored == ("column 'Mail' -> emial (unknown)",)


def test_strict_columns_refuses_unmapped_columns() -> None:
    with pytest.raises(ConfigError, match="columns not mapped to any property: 'Shoe size'"):
        resolve_mapping(MappingSpec(strict_columns=True), ["Email", "Shoe size"], SCHEMA)


def test_two_columns_for_one_property_is_refused() -> None:
    with pytest.raises(ConfigError, match="fed by both"):
        resolve_mapping(MappingSpec.from_flags(["A=email", "B=email"]), ["A", "B"], SCHEMA)


def test_bad_mapping_file(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[columns]\nA = { property = "email", checkbox = "merge" }\n')
    with pytest.raises(ConfigError, match="checkbox must be one of replace, append"):
        resolve_mapping(MappingSpec(file=path), ["A"], SCHEMA)


def test_a_mapping_file_that_is_not_text_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "mapping.toml"
    path.write_bytes(b'[columns]\n"E-mail" = "email"\n"Caf\xe9" = "firstname"\n')
    spec = MappingSpec(file=path)
    with pytest.raises(ConfigError, match=r"mapping file .*mapping\.toml is not UTF-8 text"):
        resolve_mapping(spec, ["E-mail"], SCHEMA)


def test_unmapped_columns_under_strict_columns_name_no_cli_flag() -> None:
    spec = MappingSpec(strict_columns=True)
    with pytest.raises(ConfigError, match="columns not mapped to any property") as info:
        resolve_mapping(spec, ["email", "Shoe size"], SCHEMA)
    assert "'Shoe size'" in str(info.value) and "--" not in str(info.value)
