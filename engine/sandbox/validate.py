"""Property value rules, compiled once per property into a small function.

A validator takes the raw JSON value and the stored value (for `;`-append on multi-checkboxes)
and returns the string to store (`""` means clear), or raises `InvalidValue`.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from engine.sandbox.schemas import PropertyDef

if TYPE_CHECKING:
    from engine.sandbox.pipelines import Directory

MAX_STRING_CHARS = 65_536
DAY_MS = 86_400_000

Validator = Callable[[object, "str | None"], str]
ColumnCheck = Callable[[list[str]], bool]


@dataclass(frozen=True, slots=True)
class InvalidValue(Exception):
    """One failing property value: HubSpot's `error` code and message."""

    name: str
    code: str
    message: str


_EMAIL = re.compile(r"^[^@\s;,]+@[^@\s;,]+\.[^@\s;,]+$")
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EPOCH_MS = re.compile(r"^-?\d{1,15}$")
_ISO_DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")


def as_text(value: object) -> str:
    """JSON value -> the string HubSpot would store (values are strings in the API)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def iso_from_ms(ms: int) -> str:
    """Epoch milliseconds -> `YYYY-MM-DDThh:mm:ss.sssZ`."""
    seconds, millis = divmod(ms, 1000)
    return f"{_iso_second(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=8192)
def _iso_second(seconds: int) -> str:
    """The date and time of a whole epoch second (the server stamps the current one)."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def parse_datetime_ms(text: str) -> int | None:
    """ISO 8601 (with or without zone; naive = UTC) or epoch ms -> epoch ms, else None."""
    if _EPOCH_MS.match(text):
        return int(text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


Fail = Callable[[str, str], InvalidValue]


def _valid_date(text: str, fail: Fail) -> str:
    """`YYYY-MM-DD` (a real calendar date), or an ISO 8601 datetime or epoch ms at midnight
    UTC (the properties guide: "chaînes ISO 8601 ou d'horodatages EPOCH en millisecondes
    (c.-à-d. minuit UTC)") -> `YYYY-MM-DD`."""
    if _DATE.match(text):
        try:
            date.fromisoformat(text)
        except ValueError:
            raise fail("INVALID_DATE", f"{text} is not a valid date.") from None
        return text
    ms = int(text) if _EPOCH_MS.match(text) else (
        parse_datetime_ms(text) if _ISO_DATETIME.match(text) else None)
    if ms is None:
        raise fail(
            "INVALID_DATE",
            f"{text} is not a valid date. Use YYYY-MM-DD, or an ISO 8601 datetime or epoch "
            "milliseconds at midnight UTC.",
        )
    rest = ms % DAY_MS
    if rest:
        h, m = divmod(rest // 1000, 3600)
        clock = f"{h:02d}:{m // 60:02d}:{m % 60:02d}.{rest % 1000:03d}"
        raise fail("INVALID_DATE", f"{text} is at {clock} UTC, not midnight!")
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def _valid_datetime(text: str, fail: Fail) -> str:
    """ISO 8601 or epoch ms -> `YYYY-MM-DDThh:mm:ss.sssZ`."""
    ms = parse_datetime_ms(text)
    if ms is None:
        raise fail(
            "INVALID_DATETIME",
            f"{text} is not a valid datetime. Use ISO 8601 or epoch milliseconds.",
        )
    return iso_from_ms(ms)


# Types whose non-empty values go through one text rule (an empty value clears).
_TEXT_RULES: dict[str, Callable[[str, Fail], str]] = {
    "date": _valid_date,
    "datetime": _valid_datetime,
}


def compile_validator(prop: PropertyDef, object_name: str) -> Validator:
    """The value rule of one property, as HubSpot applies it."""
    name = prop.name

    def fail(code: str, message: str) -> InvalidValue:
        return InvalidValue(name, code, message)

    if not prop.writable:

        def read_only(value: object, old: str | None) -> str:
            raise fail(
                "READ_ONLY_VALUE", f'"{name}" is a read only property; its value cannot be set.'
            )

        return read_only

    if prop.type == "string":
        check_email = object_name == "contacts" and name == "email"

        def string(value: object, old: str | None) -> str:
            text = value if type(value) is str else as_text(value)
            if len(text) > MAX_STRING_CHARS:
                raise fail(
                    "STRING_TOO_LONG",
                    f"Property {name} has a value of {len(text)} characters, "
                    f"over the limit of {MAX_STRING_CHARS}",
                )
            if check_email and text and not _EMAIL.match(text):
                raise fail("INVALID_EMAIL", f"Email address {text} is invalid")
            return text

        return string

    if prop.type == "number":

        def number(value: object, old: str | None) -> str:
            if isinstance(value, int | float) and not isinstance(value, bool):
                if isinstance(value, float) and not math.isfinite(value):
                    raise fail("INVALID_INTEGER", f"{value} was not a valid number.")
                return as_text(value)
            text = as_text(value)
            if text and not _NUMBER.match(text.strip()):
                raise fail("INVALID_INTEGER", f"{text} was not a valid number.")
            return text.strip()

        return number

    if prop.type == "bool":

        def boolean(value: object, old: str | None) -> str:
            text = as_text(value)
            if text not in ("true", "false", ""):
                raise fail(
                    "INVALID_BOOLEAN",
                    f"{text} was not a valid boolean. Valid values are 'true' and 'false'.",
                )
            return text

        return boolean

    text_rule = _TEXT_RULES.get(prop.type)
    if text_rule is not None:

        def text_value(value: object, old: str | None) -> str:
            text = as_text(value)
            return text_rule(text, fail) if text else text

        return text_value

    if prop.type == "enumeration":
        allowed = frozenset(v for _, v in prop.options)
        listing = "[" + ", ".join(v for _, v in prop.options) + "]"
        external = prop.external_options

        def bad_option(text: str) -> InvalidValue:
            return fail("INVALID_OPTION", f"{text} was not one of the allowed options: {listing}")

        if prop.is_multi:

            def multi(value: object, old: str | None) -> str:
                text = as_text(value)
                if not text:
                    return text
                append = text.startswith(";")
                parts = [p for p in text.split(";") if p]
                if not external:
                    for part in parts:
                        if part not in allowed:
                            raise bad_option(part)
                if append and old:
                    existing = old.split(";")
                    parts = existing + [p for p in parts if p not in existing]
                return ";".join(dict.fromkeys(parts))

            return multi

        def single(value: object, old: str | None) -> str:
            text = as_text(value)
            if text and not external and text not in allowed:
                raise bad_option(text)
            return text

        return single

    def opaque(value: object, old: str | None) -> str:
        return as_text(value)

    return opaque


def compile_column_check(prop: PropertyDef, object_name: str) -> ColumnCheck | None:
    """A whole column of strings at once, for the rules that keep a valid string as it is:
    True when the property's validator would accept every value and return it unchanged,
    False when some value fails. None: no column form (the caller runs the validator once
    per distinct value instead)."""
    if not prop.writable:
        return None
    if prop.type == "string":
        if object_name == "contacts" and prop.name == "email":
            match = _EMAIL.match

            def emails(column: list[str]) -> bool:
                return max(map(len, column), default=0) <= MAX_STRING_CHARS and all(
                    map(match, filter(None, column))
                )

            return emails

        def strings(column: list[str]) -> bool:
            return max(map(len, column), default=0) <= MAX_STRING_CHARS

        return strings
    if prop.type == "bool":
        return frozenset({"true", "false", ""}).issuperset
    if prop.type == "enumeration" and not prop.is_multi:
        if prop.external_options:
            return lambda column: True
        return frozenset({"", *(v for _, v in prop.options)}).issuperset
    return None


# --- owners and pipelines: values that must name a record of the portal's directory ------

OWNER_PROPERTY = "hubspot_owner_id"
# object type name -> (its pipeline property, its stage property)
PIPELINE_PROPERTIES = {"deals": ("pipeline", "dealstage"),
                       "tickets": ("hs_pipeline", "hs_pipeline_stage")}
DIRECTORY_PROPERTIES = frozenset({OWNER_PROPERTY, *(
    name for pair in PIPELINE_PROPERTIES.values() for name in pair)})


def check_directory(object_name: str, changes: dict[str, str], old: dict[str, str] | None,
                    directory: Directory, problems: list[InvalidValue] | None
                    ) -> list[InvalidValue] | None:
    """`problems` plus what the owner and pipeline values of a change get wrong: an owner id
    that is no owner's, a pipeline that is not one of the object's, a stage that is not in
    the record's pipeline (the one given, else the record's, else the default pipeline).
    Cheap when the change sets none of them (the common case)."""
    if DIRECTORY_PROPERTIES.isdisjoint(changes):
        return problems
    found: list[InvalidValue] = []
    owner = changes.get(OWNER_PROPERTY)
    if owner and not directory.is_owner(owner):
        found.append(InvalidValue(OWNER_PROPERTY, "INVALID_OWNER_ID",
                                  f"{owner} is not a valid owner id"))
    names = PIPELINE_PROPERTIES.get(object_name)
    if names is not None:
        found += _pipeline_problems(object_name, names, changes, old or {}, directory)
    return [*(problems or ()), *found] or None


def _pipeline_problems(object_name: str, names: tuple[str, str], changes: dict[str, str],
                       old: dict[str, str], directory: Directory) -> list[InvalidValue]:
    pipeline_name, stage_name = names
    given = changes.get(pipeline_name)
    if given:
        pipeline = directory.pipeline(object_name, given)
        if pipeline is None:
            listing = ", ".join(directory.pipeline_ids(object_name))
            return [InvalidValue(pipeline_name, "INVALID_OPTION",
                                 f"{given} was not one of the allowed options: [{listing}]")]
    else:
        current = old.get(pipeline_name)
        pipeline = (directory.pipeline(object_name, current) if current else None
                    ) or directory.default_pipeline(object_name)
    stage = changes.get(stage_name)
    if not stage or pipeline is None or stage in pipeline.stage_ids():
        return []
    listing = ", ".join(pipeline.stage_ids())
    return [InvalidValue(stage_name, "INVALID_OPTION",
                         f"{stage} was not one of the allowed options: [{listing}] "
                         f"(the stages of pipeline {pipeline.id}, {pipeline.label})")]
