"""Value rules: a column check agrees with its property's validator on every column, and
timestamps render as ISO 8601 with milliseconds. Pure tests, no event loop."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.sandbox.schemas import default_object_types
from engine.sandbox.validate import (
    MAX_STRING_CHARS,
    InvalidValue,
    compile_column_check,
    compile_validator,
    iso_from_ms,
)

PROPERTIES = [
    (otype.name, prop)
    for otype in default_object_types()
    for prop in otype.properties.values()
]
CHECKED = [(name, prop) for name, prop in PROPERTIES
           if compile_column_check(prop, name) is not None]

samples = st.one_of(
    st.sampled_from(["", "true", "false", "True", "lead", "customer", "LOW", "a@b.co",
                     "a@b.co\n", "x@y", "CHAMPION", "1990-01-31", "x" * (MAX_STRING_CHARS + 1)]),
    st.text(max_size=12),
)


def test_the_checked_properties_are_the_common_ones():
    kinds = {(prop.type, prop.is_multi) for _, prop in CHECKED}
    assert kinds == {("string", False), ("bool", False), ("enumeration", False)}
    assert all(prop.writable for _, prop in CHECKED)


@pytest.mark.parametrize(("object_name", "prop"), CHECKED,
                         ids=[f"{n}.{p.name}" for n, p in CHECKED])
@given(column=st.lists(samples, min_size=1, max_size=6))
def test_a_column_check_passes_exactly_the_columns_the_validator_keeps_as_they_are(
        object_name, prop, column):
    check = compile_column_check(prop, object_name)
    validate = compile_validator(prop, object_name)
    assert check is not None
    try:
        kept = all(validate(value, None) == value for value in column)
    except InvalidValue:
        kept = False
    assert check(column) is kept


@given(ms=st.integers(min_value=-30_000_000_000_000, max_value=253_402_300_799_999))
def test_iso_from_ms_is_iso_8601_with_milliseconds(ms):
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    expected = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    assert iso_from_ms(ms) == expected


def test_iso_from_ms_examples():
    assert iso_from_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_from_ms(-1) == "1969-12-31T23:59:59.999Z"
    assert iso_from_ms(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"
