"""Pure normalisation: a property schema becomes polars expressions; a frame of raw text
becomes the values HubSpot accepts plus the rejects, each with a reason a person can act on.

`expressions(schema, mapping, options)` builds a `NormalizePlan` once per run;
`normalize(frame, plan)` applies it to one batch and returns `(valid, rejects)`:

- `valid`: `source_row` plus one String column per property (internal name); null = omit.
- `rejects`: `source_row, column, value, code, message`, one record per bad field (and one
  per failed row rule). With `on_invalid="reject-row"` every row of the input lands in
  exactly one of the two frames (by `source_row`). With `"drop-field"` the bad fields are
  reported in `rejects` but the row is still sent without them (unless a row rule fails).

Everything is vectorised (no per-row Python). Each rule is one chain of polars expressions
(formats tried with `strict=False` and combined with `coalesce`/`when`); how a batch is
evaluated is a matter of cost only, never of result (tests/test_normalize_paths.py):

- a column whose values repeat (options, yes/no, a few checkbox combinations) is normalised
  once per distinct value and joined back (`NormalizePlan.distinct_share`);
- dates, datetimes and numbers try their common shapes first, one format at a time, each on
  the rows still without a value (compacted, so a value pays for about one parse); the
  whole rule, with its reasons, runs only on the rows they all leave (`_Rule.tiers`).
DST: a naive datetime that falls in a spring-forward gap is rejected (INVALID_DATETIME);
one that is ambiguous (autumn) is read as the earlier instant (summer time).

A value holding a NUL character is invalid for every property type (HubSpot cannot store
it; a source keeps it as read so that it is reported, never sent): INVALID_CHARACTER.

Cleaning, before any rule: every value is trimmed of surrounding whitespace (spaces, tabs,
NBSP, U+202F...; a column's `trim = false` keeps a text value as it is) and what is then
empty is empty (see `empty`); then the column's value map, if any (mapping.ValueMap), turns
a whole value (a multi-checkbox's each item) into the text the rule reads. Then by property:

- e-mails: HubSpot has no e-mail type (`email` is a string/text property), so a string
  property is an e-mail when it is named `email` or `*_email` (`work_email`): checked with
  `values.EMAIL_PATTERN` (INVALID_EMAIL, never sent to draw a server error) and sent
  lower-cased, as HubSpot compares e-mails ignoring case;
- domains: `domain` and `hs_additional_domains` (a `;` list) lose scheme, `www.`, port, path
  and case (`values.clean_domain`); a value with no host left is INVALID_DOMAIN. `website`
  is a URL and stays as given;
- numbers: a currency symbol or code (`€ 4.000`, `4 000,50 EUR`, `-$12`), before or after,
  is dropped, then separators are read by `thousands`/`decimal` (NBSP and U+202F count as a
  space separator).
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

import polars as pl

from engine.errors import ConfigError
from engine.mapping import (
    CheckboxMode,
    ColumnOptions,
    DateOrder,
    EmptyMode,
    ResolvedMapping,
    Target,
    ValueMap,
)
from engine.schema import Property, Schema
from engine.source import SOURCE_ROW
from engine.values import EMAIL_PATTERN, clean_domain

DatesMode = Literal["iso", "epoch-ms"]
OnInvalid = Literal["reject-row", "drop-field"]

MAX_STRING_CHARS = 65_536
# A reject as normalize and the journal hold it (a rejects file names these `hsbulk_*`).
REJECT_SCHEMA = pl.Schema({
    SOURCE_ROW: pl.Int64(), "column": pl.String(), "value": pl.String(),
    "code": pl.String(), "message": pl.String(),
})
# Object rules: creating a record of these types needs at least one of these properties.
REQUIRED_ANY: dict[str, tuple[str, ...]] = {"contacts": ("email", "firstname", "lastname")}

_TRUE = ("true", "yes", "y", "1", "on", "checked", "t")
_FALSE = ("false", "no", "n", "0", "off", "unchecked", "f")
_BOOL_MAP = {**dict.fromkeys(_TRUE, "true"), **dict.fromkeys(_FALSE, "false")}
_EPOCH_MS_FROM = 100_000_000_000  # |n| >= 1e11 is read as milliseconds, below as seconds
_MS_PER_DAY = 86_400_000
# The instants polars can format (years -262143 to 262142); beyond them it panics.
_EPOCH_MS_RANGE = (-8_334_601_228_800_000, 8_210_266_876_799_999)
_AWARE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z")
_NAIVE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M",
                  "%Y-%m-%d %H:%M")
_SLASH_SEPARATORS = ("/", ".", "-")
_DISTINCT_SAMPLE_ROWS = 4096
_DATE_HINT = ("use YYYY-MM-DD, DD/MM/YYYY or MM/DD/YYYY (see date_order), 5 Mar 2024, "
              "an ISO datetime at midnight UTC, or epoch milliseconds at midnight UTC")
_DATETIME_HINT = ("use ISO 8601 (2024-03-05T14:30:00Z, with an offset, or naive in "
                  "the timezone setting), a date, or epoch seconds/milliseconds")


@dataclass(frozen=True, slots=True)
class NormalizeOptions:
    """Run-wide value rules (CLI: --date-order, --timezone, --dates, --empty, --on-invalid,
    --checkbox, --separators, --thousands, --decimal)."""

    date_order: DateOrder | None = None
    timezone: str = "UTC"
    dates: DatesMode = "iso"
    empty: EmptyMode = "skip"
    on_invalid: OnInvalid = "reject-row"
    checkbox: CheckboxMode = "replace"
    separators: str = ";,|"
    thousands: str = ","
    decimal: str = "."
    max_chars: int = MAX_STRING_CHARS
    object_rules: bool = True

    def __post_init__(self) -> None:
        for name, allowed in (("date_order", (None, *get_args(DateOrder))),
                              ("dates", get_args(DatesMode)), ("empty", get_args(EmptyMode)),
                              ("on_invalid", get_args(OnInvalid)),
                              ("checkbox", get_args(CheckboxMode))):
            if getattr(self, name) not in allowed:
                choices = ", ".join(str(a) for a in allowed if a is not None)
                raise ConfigError(f"{name} must be one of {choices}, "
                                  f"not {getattr(self, name)!r}")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"timezone {self.timezone!r} is not an IANA time zone "
                              "such as UTC or Europe/Paris") from None
        if not self.separators:
            raise ConfigError("separators must name at least one character")
        if self.thousands == self.decimal or len(self.decimal) != 1 or len(self.thousands) > 1:
            raise ConfigError("thousands and decimal must be different single characters "
                              "(thousands may be empty)")


@dataclass(frozen=True, slots=True)
class _Rule:
    """The expressions of one target. Work columns: t (trimmed raw, null when empty),
    parse intermediates, o (output, null when empty or invalid), b (bad)."""

    target: Target
    prop: Property
    index: int
    raw: pl.Expr
    steps: tuple[pl.Expr, ...]
    out: pl.Expr
    bad: pl.Expr
    code: pl.Expr
    message: pl.Expr
    empty: EmptyMode
    # Shortcuts for the common shapes, tried in order, each on the rows the earlier ones left:
    # an expression of t giving the output or null. Whatever one gives, the whole rule
    # (steps ... out) gives the same for that value; the rule runs on what they all leave.
    tiers: tuple[pl.Expr, ...] = ()
    by_value: bool = False        # worth normalising once per distinct value when they repeat

    @property
    def t(self) -> str:
        return f"__t{self.index}"  # the first step

    @property
    def o(self) -> str:
        return f"__o{self.index}"

    @property
    def b(self) -> str:
        return f"__b{self.index}"

    @property
    def x(self) -> str:
        return f"__x{self.index}"


@dataclass(frozen=True, slots=True)
class NormalizePlan:
    """Everything `normalize` needs, built once per run by `expressions`."""

    rules: tuple[_Rule, ...]
    options: NormalizeOptions
    required_any: tuple[str, ...] = ()
    source_columns: tuple[str, ...] = field(default=())
    # How a batch is evaluated (never what it yields): a column whose distinct values are at
    # most this share of the rows is normalised once per distinct value (0 never, 1 always);
    # `fast_paths` tries each rule's tiers first and runs the whole rule only on the rows
    # they leave.
    distinct_share: float = 0.5
    fast_paths: bool = True

    @property
    def properties(self) -> tuple[str, ...]:
        return tuple(r.prop.name for r in self.rules)


def _quoted_list(values: Sequence[str], limit: int = 25) -> str:
    shown = ", ".join(values[:limit])
    more = len(values) - limit
    return shown + (f" … and {more} more" if more > 0 else "")


def _value_msg(prefix: str, t: pl.Expr, suffix: str) -> pl.Expr:
    return pl.concat_str(pl.lit(prefix), t, pl.lit(suffix))


# --- dates -----------------------------------------------------------------------------


class _Steps:
    """Work columns of one rule, computed in order (each may use the earlier ones).

    A cascade tries formats one after another, each only on the values still unparsed, so a
    column of mostly ISO dates pays for one parse, not for every format we accept.
    """

    def __init__(self, i: int) -> None:
        self.i = i
        self.steps: list[pl.Expr] = []

    def add(self, name: str, expr: pl.Expr) -> pl.Expr:
        column = f"__{name}{self.i}"
        self.steps.append(expr.alias(column))
        return pl.col(column)

    def cascade(self, name: str, t: pl.Expr,
                parsers: Sequence[Callable[[pl.Expr], pl.Expr]]) -> pl.Expr:
        acc = self.add(f"{name}0_", parsers[0](t))
        for k, parse in enumerate(parsers[1:], 1):
            acc = self.add(f"{name}{k}_",
                           pl.coalesce(acc, parse(pl.when(acc.is_null()).then(t))))
        return acc


def _strptime(fmt: str, dtype: pl.DataType) -> Callable[[pl.Expr], pl.Expr]:
    if isinstance(dtype, pl.Date):
        return lambda e: e.str.strptime(pl.Date, fmt, strict=False)
    zone = "UTC" if "%#z" in fmt else None
    return lambda e: e.str.to_datetime(fmt, time_unit="ms", time_zone=zone, strict=False)


def _slashed_formats(order: str) -> list[Callable[[pl.Expr], pl.Expr]]:
    """Year-last dates with / . or - under one order (DMY or MDY)."""
    day_month = "%d{0}%m{0}%Y" if order == "DMY" else "%m{0}%d{0}%Y"
    return [_strptime(day_month.format(sep), pl.Date()) for sep in _SLASH_SEPARATORS]


_PLAIN_DATES = ("%Y-%m-%d", "%d %B %Y", "%Y/%m/%d", "%B %d, %Y", "%d-%b-%Y")


def _iso_date(e: pl.Expr) -> pl.Expr:
    return pl.when(e.str.len_bytes() == 10).then(e).str.strptime(pl.Date, _PLAIN_DATES[0],
                                                                 strict=False)


def _calendar(steps: _Steps, t: pl.Expr, order: DateOrder | None) -> tuple[pl.Expr, pl.Expr]:
    """(date, ambiguous flag) from the calendar-date formats."""
    first = [_iso_date]
    rest = [_strptime(f, pl.Date()) for f in _PLAIN_DATES[1:]]
    if order in ("DMY", "MDY"):
        return steps.cascade("c", t, [*first, *_slashed_formats(order), *rest]), pl.lit(False)
    iso = steps.cascade("c", t, first)
    left = steps.add("cl", pl.when(iso.is_null()).then(t))
    dmy = steps.cascade("dmy", left, _slashed_formats("DMY"))
    mdy = steps.cascade("mdy", left, _slashed_formats("MDY"))
    ambiguous = steps.add("a", dmy.is_not_null() & mdy.is_not_null() & (dmy != mdy))
    single = steps.add("cs", pl.coalesce(iso, pl.when(~ambiguous).then(pl.coalesce(dmy, mdy))))
    both_null = pl.when(single.is_null() & ~ambiguous).then(t)
    other = steps.cascade("co", both_null, rest)
    return steps.add("cal", pl.coalesce(single, other)), ambiguous


def epoch_ms(t: pl.Expr, *, seconds_below: int = _EPOCH_MS_FROM) -> pl.Expr:
    """Digits as epoch ms (|n| >= `seconds_below`, by default 1e11) or seconds, as a UTC
    datetime; null otherwise. `seconds_below=0` reads every number as milliseconds."""
    n = pl.when(t.str.contains(r"^-?\d{1,16}$")).then(t).cast(pl.Int64, strict=False)
    ms = pl.when(n.abs() >= seconds_below).then(n).otherwise(n * 1000)
    return pl.when(ms.is_between(*_EPOCH_MS_RANGE)).then(ms).cast(pl.Datetime("ms", "UTC"))


def _utc_instant(t: pl.Expr) -> pl.Expr:
    """The common UTC forms, by length: 2024-03-05T14:30:00Z and ...:00.000Z."""
    size = t.str.len_bytes()
    return pl.coalesce(
        pl.when(size == 20).then(t).str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_unit="ms",
                                                    strict=False),
        pl.when(size == 24).then(t).str.to_datetime("%Y-%m-%dT%H:%M:%S%.3fZ", time_unit="ms",
                                                    strict=False),
    ).dt.replace_time_zone("UTC")


def _to_utc(naive: pl.Expr, tz: str) -> pl.Expr:
    local = naive.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
    return local.dt.convert_time_zone("UTC")


def _instants(steps: _Steps, t: pl.Expr, tz: str) -> tuple[pl.Expr, pl.Expr]:
    """(UTC instant, naive local value) from ISO datetimes or epoch numbers."""
    utc = steps.add("zu", _utc_instant(t))
    zoned = pl.when(utc.is_null() & t.str.contains(r"(?:[Zz]|[+-]\d\d(?::?\d\d)?)$")).then(t)
    aware = steps.cascade("z", zoned, [_strptime(f, pl.Datetime()) for f in _AWARE_FORMATS])
    aware = steps.add("za", pl.coalesce(utc, aware))
    left = steps.add("zl", pl.when(aware.is_null()).then(t))
    naive = steps.cascade("n", left, [_strptime(f, pl.Datetime()) for f in _NAIVE_FORMATS])
    parsed = steps.add("p", pl.coalesce(aware, _to_utc(naive, tz)))
    epoch = epoch_ms(pl.when(parsed.is_null() & naive.is_null()).then(t))
    return steps.add("m", pl.coalesce(parsed, epoch)), naive


def _date_out(days: pl.Expr, dates: DatesMode) -> pl.Expr:
    return (days.cast(pl.Date).cast(pl.String) if dates == "iso"
            else (days.cast(pl.Int64) * _MS_PER_DAY).cast(pl.String))


def _date_tiers(t: pl.Expr, order: DateOrder | None, dates: DatesMode) -> tuple[pl.Expr, ...]:
    """The calendar cascade one format at a time (only ISO when the order is unknown, where
    the rule weighs DMY against MDY): what a format parses, the rule parses the same way."""
    formats = ([_iso_date, *_slashed_formats(order),
                *(_strptime(f, pl.Date()) for f in _PLAIN_DATES[1:])]
               if order in ("DMY", "MDY") else [_iso_date])
    return tuple(_date_out(parse(t).cast(pl.Int32), dates) for parse in formats)


def _date_rule(steps: _Steps, t: pl.Expr, prop: Property, order: DateOrder | None,
               dates: DatesMode) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    cal, ambiguous = _calendar(steps, t, order)
    # ISO datetimes (aware, or naive read as UTC) and epoch values: must be midnight UTC.
    instant, _ = _instants(steps, pl.when(cal.is_null() & ~ambiguous).then(t), "UTC")
    ms = instant.dt.epoch("ms")
    midnight = pl.when(ms % _MS_PER_DAY == 0).then(ms // _MS_PER_DAY).cast(pl.Int32)
    out = _date_out(pl.coalesce(cal.cast(pl.Int32), midnight), dates)
    code = pl.when(ambiguous).then(pl.lit("AMBIGUOUS_DATE")).otherwise(pl.lit("INVALID_DATE"))
    dmy = pl.coalesce([f(t) for f in _slashed_formats("DMY")]).cast(pl.String)
    mdy = pl.coalesce([f(t) for f in _slashed_formats("MDY")]).cast(pl.String)
    message = (
        pl.when(ambiguous)
        .then(pl.concat_str(pl.lit("'"), t, pl.lit(f"' for {prop.name} could be "), dmy,
                            pl.lit(" (DMY) or "), mdy,
                            pl.lit(" (MDY): set date_order to DMY or MDY")))
        .when(instant.is_not_null())
        .then(pl.concat_str(pl.lit("'"), t, pl.lit(f"' for date property {prop.name} is at "),
                            instant.dt.strftime("%H:%M:%S%.3f"),
                            pl.lit(" UTC, not midnight: give a calendar date")))
        .otherwise(_value_msg("'", t, f"' is not a valid date for {prop.name}: {_DATE_HINT}"))
    )
    return out, code, message


def _datetime_out(instant: pl.Expr, dates: DatesMode) -> pl.Expr:
    if dates == "iso":  # the UTC wall clock: formatting it without the zone is faster
        return instant.dt.replace_time_zone(None).dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
    return instant.dt.epoch("ms").cast(pl.String)


# Naive forms by length, "T" or " " between date and time (one colon or two, so no value
# parses under two of the cascade's naive formats, and none of them ends like an offset).
_NAIVE_BY_SIZE = ((16, _NAIVE_FORMATS[2], _NAIVE_FORMATS[3]),
                  (19, _NAIVE_FORMATS[0], _NAIVE_FORMATS[1]))


def _datetime_tiers(t: pl.Expr, tz: str, dates: DatesMode) -> tuple[pl.Expr, ...]:
    """The common UTC forms, then the common naive forms (read in `tz`): what they parse,
    the rule parses the same way; a naive time that does not exist is left to the rule."""
    size = t.str.len_bytes()
    has_t = t.str.contains("T", literal=True)
    naive = [_to_utc(pl.coalesce(
        _strptime(with_t, pl.Datetime())(pl.when((size == n) & has_t).then(t)),
        _strptime(with_space, pl.Datetime())(pl.when((size == n) & ~has_t).then(t))), tz)
        for n, with_t, with_space in _NAIVE_BY_SIZE]
    return tuple(_datetime_out(instant, dates) for instant in (_utc_instant(t), *naive))


def _datetime_rule(steps: _Steps, t: pl.Expr, prop: Property, order: DateOrder | None,
                   tz: str, dates: DatesMode) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    aware_or_naive = _instants(steps, t, tz)
    still = pl.when(aware_or_naive[0].is_null() & aware_or_naive[1].is_null()).then(t)
    cal, ambiguous = _calendar(steps, still, order)
    local = cal.cast(pl.Datetime("ms")).dt.replace_time_zone(tz, ambiguous="earliest",
                                                              non_existent="null")
    instant = steps.add("i", pl.coalesce(aware_or_naive[0],
                                         local.dt.convert_time_zone("UTC")))
    naive = aware_or_naive[1]
    out = _datetime_out(instant, dates)
    code = (pl.when(ambiguous).then(pl.lit("AMBIGUOUS_DATE"))
            .otherwise(pl.lit("INVALID_DATETIME")))
    message = (
        pl.when(ambiguous)
        .then(_value_msg("'", t, f"' for {prop.name} is ambiguous (day/month): "
                                 "set date_order to DMY or MDY"))
        .when(naive.is_not_null() | cal.is_not_null())
        .then(_value_msg("'", t, f"' does not exist in {tz} (clocks move forward then): "
                                 "fix the time or give a UTC offset"))
        .otherwise(_value_msg("'", t, f"' is not a valid datetime for {prop.name}: "
                                      f"{_DATETIME_HINT}"))
    )
    return out, code, message


# --- other types -----------------------------------------------------------------------


_CANONICAL_NUMBER = r"^-?(?:0|[1-9]\d*)(?:\.\d*[1-9])?$"
_CURRENCY_CODES = ("EUR|USD|GBP|CHF|JPY|CNY|CAD|AUD|NZD|SEK|NOK|DKK|PLN|CZK|HUF|INR|BRL|MXN|"
                   "ZAR|HKD|SGD|KRW|RUB|TRY|ILS|AED")
# a symbol (US$, C$ and the like too) or an ISO code in any case, as a word of its own
_CURRENCY = rf"(?:(?i:\b(?:{_CURRENCY_CODES})\b)|[A-Z]{{0,2}}[€$£¥₹₩₽₺₪₫₴₱฿¢])"
_CURRENCY_HEAD = rf"^([+-]?)\s*{_CURRENCY}\s*"
_CURRENCY_TAIL = rf"\s*{_CURRENCY}$"
_SPACES = "[\u00a0\u202f\u2009\u2007]"  # no-break and thin spaces: a space separator


def _number_tiers(t: pl.Expr, thousands: str, decimal: str) -> tuple[pl.Expr, ...]:
    """Values already canonical; canonical once the thousands separators are gone (the first
    two stages of `_number`); canonical once trailing decimal zeros are gone (what the
    exact decimal path of `_number` gives, for sizes a Decimal(38, 18) holds exactly)."""
    tiers: list[pl.Expr] = []
    if decimal == "." and thousands != ".":
        tiers.append(pl.when(t.str.contains(_CANONICAL_NUMBER)).then(t))
    if decimal == "." and thousands == ",":  # one regex: grouped and canonical without them
        tiers.append(pl.when(t.str.contains(r"^-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d*[1-9])?$"))
                     .then(t.str.replace_all(",", "", literal=True)))
    else:
        cleaned = _number_cleaned(t, thousands, decimal)
        tiers.append(pl.when(cleaned.str.contains(_CANONICAL_NUMBER)).then(cleaned))
    if decimal == "." and thousands == ",":
        zeros = pl.when(t.str.contains(r"^-?(?:0|[1-9]\d{0,2}(?:,\d{3}){0,5}|[1-9]\d{0,17})"
                                       r"\.\d{0,17}0$")).then(t).str.replace_all(
            ",", "", literal=True)
    else:
        cleaned = _number_cleaned(t, thousands, decimal)
        zeros = pl.when(cleaned.str.contains(r"^-?(?:0|[1-9]\d{0,17})\.\d{0,17}0$")).then(
            cleaned)
    short = zeros.str.strip_chars_end("0").str.strip_suffix(".")
    tiers.append(pl.when(short == "-0").then(pl.lit("0")).otherwise(short))
    return tuple(tiers)


def _number_cleaned(rest: pl.Expr, thousands: str, decimal: str) -> pl.Expr:
    if thousands:
        grouped = (rf"^[+-]?\d{{1,3}}(?:{re.escape(thousands)}\d{{3}})+"
                   rf"(?:{re.escape(decimal)}\d*)?$")
        rest = (pl.when(~rest.str.contains(thousands, literal=True)
                        | rest.str.contains(grouped))
                .then(rest.str.replace_all(thousands, "", literal=True)))
    if decimal != ".":
        rest = rest.str.replace_all(decimal, ".", literal=True)
    return rest


def _without_currency(e: pl.Expr, thousands: str) -> pl.Expr:
    """`€ 4.000` -> `4.000`, `-$12` -> `-12`, `4 000,50 EUR` -> `4 000,50`."""
    e = e.str.replace(_CURRENCY_HEAD, "${1}").str.replace(_CURRENCY_TAIL, "")
    return e.str.replace_all(_SPACES, " ") if thousands == " " else e


def _number(steps: _Steps, t: pl.Expr, thousands: str, decimal: str) -> pl.Expr:
    """Canonical decimal text; most values are already canonical and pay one regex."""
    if decimal == "." and thousands != ".":
        done = steps.add("q", pl.when(t.str.contains(_CANONICAL_NUMBER)).then(t))
    else:
        done = steps.add("q", pl.lit(None, dtype=pl.String))
    plain = _without_currency(pl.when(done.is_null()).then(t), thousands)
    cleaned = steps.add("qc", _number_cleaned(plain, thousands, decimal))
    done = steps.add("qd", pl.coalesce(done, pl.when(cleaned.str.contains(_CANONICAL_NUMBER))
                                       .then(cleaned)))
    rest = pl.when(done.is_null()).then(cleaned).str.replace_all(r"\s", "")
    rest = steps.add("qr", pl.when(
        rest.str.contains(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")).then(rest))
    # Drop the trailing zeros and a point right before them (what the regex \.?0+$ does),
    # without a regex: a regex pass costs as much on null rows as on values.
    text = rest.cast(pl.Decimal(38, 18), strict=False).cast(pl.String)
    exact = (pl.when(text.str.ends_with("0"))
             .then(text.str.strip_chars_end("0").str.strip_suffix(".")).otherwise(text))
    exact = pl.when(exact == "-0").then(pl.lit("0")).otherwise(exact)
    as_float = rest.cast(pl.Float64, strict=False)
    wide = pl.when(as_float.is_finite()).then(as_float.cast(pl.String))
    return pl.coalesce(done, exact, wide)


def _option_maps(prop: Property) -> tuple[dict[str, str], dict[str, str]]:
    values = {o.value: o.value for o in prop.options}
    labels: dict[str, str] = {}
    for o in prop.options:
        labels.setdefault(o.label.strip().lower(), o.value)
    for o in prop.options:
        labels.setdefault(o.value.lower(), o.value)
    return values, labels


def _to_option(e: pl.Expr, prop: Property, steps: _Steps | None = None) -> pl.Expr:
    """Option value by exact value, else by label (or value) ignoring case.

    When no two options collide ignoring case, one lookup of the lower-cased text does both.
    """
    values, labels = _option_maps(prop)
    if not values:
        return pl.lit(None, dtype=pl.String)
    if all(labels.get(v.lower()) == v for v in values):
        return e.str.to_lowercase().replace_strict(labels, default=None,
                                                   return_dtype=pl.String)
    exact = e.replace_strict(values, default=None, return_dtype=pl.String)
    if steps is not None:
        exact = steps.add("v", exact)
        e = pl.when(exact.is_null()).then(e)
    return pl.coalesce(
        exact, e.str.to_lowercase().replace_strict(labels, default=None,
                                                   return_dtype=pl.String))


def _options_hint(prop: Property) -> str:
    values = [o.value for o in prop.options if not o.hidden]
    if not values:
        return f"{prop.name} has no options defined"
    return f"valid values of {prop.name}: {_quoted_list(values)} (or their labels)"


def _split_regex(separators: str) -> str:
    escaped = "".join("\\" + c if c in "\\^]-[" else c for c in separators)
    return f"[{escaped}]"


def _multi_rule(steps: _Steps, t: pl.Expr, prop: Property, col_opts: ColumnOptions,
                options: NormalizeOptions) -> tuple[pl.Expr, pl.Expr, pl.Expr, pl.Expr]:
    """Multi-checkbox: items split on any separator, each an option value (or label)."""
    separators = _split_regex(col_opts.separators or options.separators)
    # One regex turns every run of separators (and the spaces around them) into \x1f.
    joined_raw = (t.str.replace_all(rf"\s*(?:{separators}\s*)+", "\x1f")
                  .str.strip_chars(" \x1f"))
    items = steps.add("l", pl.when(joined_raw != "").then(joined_raw).str.split("\x1f"))
    if col_opts.values is not None:  # each item, then drop the ones mapped to nothing
        items = steps.add("lm", items.list.eval(
            _mapped(pl.element(), col_opts.values)).list.eval(
            pl.element().filter(pl.element() != "")))
        items = steps.add("lx", pl.when(items.list.len() > 0).then(items))
    mapped = items if prop.external_options else items.list.eval(
        _to_option(pl.element(), prop))
    # join(ignore_nulls=False) is null as soon as one item is not an option.
    joined = steps.add("lj", mapped.list.unique(maintain_order=True)
                       .list.join(";", ignore_nulls=False))
    prefix = ";" if (col_opts.checkbox or options.checkbox) == "append" else ""
    out = pl.lit(prefix) + joined if prefix else joined
    bad = items.is_not_null() & joined.is_null()
    code = pl.lit("INVALID_OPTION")
    unknown = items.list.eval(
        pl.element().filter(_to_option(pl.element(), prop).is_null())).list.join("', '")
    message = pl.concat_str(pl.lit("'"), unknown,
                            pl.lit(f"' not an option of {prop.name}; {_options_hint(prop)}"))
    return out, bad, code, message


def _build_rule(i: int, target: Target, prop: Property, options: NormalizeOptions) -> _Rule:
    raw = (pl.col(target.column) if target.column is not None
           else pl.lit(target.constant, dtype=pl.String))
    col_opts = target.options
    order = col_opts.date_order or options.date_order
    empty = col_opts.empty or options.empty
    steps = _Steps(i)
    email = is_email(prop)  # trimmed by its rule, only where the common case fails
    as_given = prop.type == "string" and (email or not col_opts.trim)
    cell = raw if as_given else raw.str.strip_chars()
    if col_opts.values is not None and not prop.is_multi:
        cell = _mapped(cell, col_opts.values)
    t = steps.add("t", cell.replace("", None))  # (a when/then would strip twice)
    bad: pl.Expr | None = None
    tiers: tuple[pl.Expr, ...] = ()
    out: pl.Expr
    if email:
        address = steps.add("e", t.str.strip_chars().replace("", None)) if col_opts.trim else t
        out, code, message = _email_rule(address, prop)
        tiers = (pl.when(t.str.contains(_LOWER_EMAIL)).then(t), _email_rule(t, prop)[0])
        bad = address.is_not_null() & pl.col(f"__o{i}").is_null()
    elif prop.type == "string" and prop.name in _DOMAIN_PROPERTIES:
        out, code, message = _domain_rule(steps, t, prop)
    elif prop.type == "date":
        out, code, message = _date_rule(steps, t, prop, order, options.dates)
        tiers = _date_tiers(t, order, options.dates)
    elif prop.type == "datetime":
        out, code, message = _datetime_rule(steps, t, prop, order, options.timezone,
                                            options.dates)
        tiers = _datetime_tiers(t, options.timezone, options.dates)
    elif prop.type == "bool" or (prop.type == "enumeration"
                                 and prop.field_type == "booleancheckbox" and not prop.options):
        out = t.str.to_lowercase().replace_strict(_BOOL_MAP, default=None,
                                                  return_dtype=pl.String)
        code = pl.lit("INVALID_BOOL")
        message = _value_msg("'", t, f"' is not a yes/no value for {prop.name}: use true/false, "
                                     "yes/no, y/n, 1/0, on/off or checked/unchecked")
    elif prop.type == "number":
        out = _number(steps, t, options.thousands, options.decimal)
        tiers = _number_tiers(t, options.thousands, options.decimal)
        code = pl.lit("INVALID_NUMBER")
        thousands = f"'{options.thousands}'" if options.thousands else "none"
        message = _value_msg("'", t, f"' is not a number for {prop.name}: use digits with "
                                     f"'{options.decimal}' as the decimal point (thousands "
                                     f"separator {thousands} between groups of 3 digits), "
                                     "e.g. 1234.5 or 1.5e3")
    elif prop.is_multi:
        out, bad, code, message = _multi_rule(steps, t, prop, col_opts, options)
    elif prop.type == "enumeration":
        out = t if prop.external_options else _to_option(t, prop, steps)
        code = pl.lit("INVALID_OPTION")
        message = _value_msg("'", t, f"' is not an option of {prop.name}; "
                                     f"{_options_hint(prop)}")
    else:  # string and anything else writable: as is, length-checked
        limit = options.max_chars
        out = pl.when(t.str.len_bytes() <= limit).then(t).when(
            t.str.len_chars() <= limit).then(t)
        code = pl.lit("VALUE_TOO_LONG")
        message = pl.concat_str(pl.lit(f"value of {prop.name} has "),
                                t.str.len_chars().cast(pl.String),
                                pl.lit(f" characters; HubSpot takes at most {limit}"))
    if bad is None:
        bad = t.is_not_null() & pl.col(f"__o{i}").is_null()
    return _Rule(target, prop, i, raw, tuple(steps.steps), out, bad, code, message, empty,
                 tiers=tiers, by_value=prop.type != "string")


_DOMAIN_PROPERTIES = ("domain", "hs_additional_domains")
# The common e-mail: lower-case ASCII that EMAIL_PATTERN takes, so sent as it is (a subset of
# EMAIL_PATTERN: a fast path that skips lower-casing, never a second definition).
_LOWER_LABEL = r"[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?"
_LOWER_EMAIL = rf"^[a-z0-9._+\-]+@{_LOWER_LABEL}(?:\.{_LOWER_LABEL})+$"


def is_email(prop: Property) -> bool:
    """A string property that holds an e-mail address (see the module docstring)."""
    return prop.type == "string" and (prop.name == "email" or prop.name.endswith("_email"))


def _mapped(e: pl.Expr, values: ValueMap) -> pl.Expr:
    """`e` through a value map: keys match trimmed and ignoring case; others stay as they are."""
    return e.str.strip_chars().str.to_lowercase().replace_strict(
        values.lookup, default=e, return_dtype=pl.String)


def _email_rule(address: pl.Expr, prop: Property) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """Lower-cased when valid. A valid address holds no whitespace, so one already trimmed
    (the common case) is taken as is by the first tier: only the others pay for a trim."""
    out = pl.when(address.str.contains(EMAIL_PATTERN)).then(address.str.to_lowercase())
    message = _value_msg("'", address, f"' is not a valid e-mail address for {prop.name}: "
                                       "use name@example.com")
    return out, pl.lit("INVALID_EMAIL"), message


def _domain_rule(steps: _Steps, t: pl.Expr, prop: Property) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """Host names without scheme, `www.`, port, path or case; a `;` list for additional
    domains (each cleaned, empty ones and repeats dropped)."""
    if prop.name == "domain":
        host = steps.add("h", clean_domain(t))
        out = pl.when(host != "").then(host)
    else:
        hosts = steps.add("h", t.str.split(";").list.eval(
            clean_domain(pl.element())).list.eval(pl.element().filter(pl.element() != ""))
            .list.unique(maintain_order=True))
        out = pl.when(hosts.list.len() > 0).then(hosts.list.join(";"))
    message = _value_msg("'", t, f"' holds no domain name for {prop.name}: "
                                 "use a host name such as example.com")
    return out, pl.lit("INVALID_DOMAIN"), message


def expressions(schema: Schema, mapping: ResolvedMapping,
                options: NormalizeOptions | None = None) -> NormalizePlan:
    """Build the normalisation plan for one object from its schema and the mapping.

    Raises `ConfigError` for a target that is not a writable property, for an invalid
    constant or value map target, and (with object rules on) when contacts map none of
    email/firstname/lastname.
    """
    options = options or NormalizeOptions()
    rules: list[_Rule] = []
    for i, target in enumerate(mapping.targets):
        prop = schema.get(target.property)
        if prop is None or not prop.is_writable:
            raise ConfigError(f"property {target.property!r} of {schema.object_type} is not "
                              "a writable property")
        _check_value_map(target, prop, options)
        rules.append(_build_rule(i, target, prop, options))
    required: tuple[str, ...] = ()
    if options.object_rules and schema.object_type.name in REQUIRED_ANY:
        required = REQUIRED_ANY[schema.object_type.name]
        if not any(r.prop.name in required for r in rules):
            raise ConfigError(f"{schema.object_type} need at least one of "
                              f"{', '.join(required)}: map a column to one of them")
    plan = NormalizePlan(tuple(rules), options, required,
                         tuple(dict.fromkeys(t.column for t in mapping.targets
                                             if t.column is not None)))
    _check_constants(plan)
    return plan


def _check_value_map(target: Target, prop: Property, options: NormalizeOptions) -> None:
    """Every value a column's map gives must be one its property takes (as a cell would)."""
    values = target.options.values
    if values is None or target.column is None:
        return
    given = [(key, value) for key, value in values.pairs if value.strip()]
    if not given:
        return
    bare = replace(target, options=replace(target.options, values=None))
    rule = _build_rule(0, bare, prop, options)
    probe = pl.DataFrame({SOURCE_ROW: range(len(given)), target.column: [v for _, v in given]},
                         schema={SOURCE_ROW: pl.Int64, target.column: pl.String})
    work = _evaluate_lazy(probe.lazy(), [rule]).with_columns(rule.message.alias("__m")).collect()
    problems = [f"value map {key!r} -> {value!r}: {message}"
                for (key, value), bad, message in zip(given, work[rule.b], work["__m"],
                                                      strict=True) if bad]
    if problems:
        raise ConfigError(f"{values.origin or 'value map'}, column {target.column!r}: "
                          + "; ".join(problems))


def _check_constants(plan: NormalizePlan) -> None:
    const_rules = [r for r in plan.rules if r.target.constant is not None]
    if not const_rules:
        return
    probe = pl.DataFrame({c: [None] for c in plan.source_columns},
                         schema=dict.fromkeys(plan.source_columns, pl.String))
    probe = probe.with_columns(pl.lit(1, dtype=pl.Int64).alias(SOURCE_ROW))
    work = _evaluate(probe, plan)
    problems = [f"constant {r.target.constant!r} for {r.prop.name}: {message}"
                for r in const_rules if work[r.b][0]
                for message in work.select(r.message).to_series().to_list()]
    if problems:
        raise ConfigError("; ".join(problems))


def _evaluate(frame: pl.DataFrame, plan: NormalizePlan) -> pl.DataFrame:
    return _evaluate_lazy(frame.lazy(), plan.rules).collect()


def _evaluate_lazy(work: pl.LazyFrame, rules: Sequence[_Rule]) -> pl.LazyFrame:
    """Every work column of `rules` (steps in lockstep), then out and bad, row by row."""
    for k in range(max((len(r.steps) for r in rules), default=0)):
        work = work.with_columns(r.steps[k] for r in rules if k < len(r.steps))
    work = work.with_columns(r.out.alias(r.o) for r in rules)
    return work.with_columns(r.bad.alias(r.b) for r in rules)


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One rule over one batch: output and bad flag per row, and the bad rows' reasons."""

    out: pl.Series
    bad: pl.Series
    rejects: pl.DataFrame | None  # source_row, value, code, message (bad rows only)


def _reasons(work: pl.DataFrame, rule: _Rule) -> pl.DataFrame | None:
    bad = work.get_column(rule.b)
    if not bad.any():
        return None
    return work.filter(bad).select(pl.col(SOURCE_ROW), rule.raw.cast(pl.String).alias("value"),
                                   rule.code.alias("code"), rule.message.alias("message"))


def _by_rows(frame: pl.DataFrame, rules: Sequence[_Rule],
             fast_paths: bool) -> dict[int, _Outcome]:
    """Evaluate `rules` on every row of `frame` (`source_row` + their columns).

    A rule with tiers tries them first, each on the rows the earlier ones left (compacted,
    so a column of common shapes pays one parse per value); the whole rule then runs only
    on what they all left.
    """
    tiered = [r for r in rules if fast_paths and r.tiers]
    full = [r for r in rules if not (fast_paths and r.tiers)]
    lazy = _evaluate_lazy(frame.lazy(), full)
    if tiered:
        lazy = (lazy.with_columns(r.steps[0] for r in tiered)
                .with_columns(r.tiers[0].alias(r.x) for r in tiered))
    work = lazy.collect()
    outcomes = {r.index: _Outcome(work.get_column(r.o), work.get_column(r.b), _reasons(work, r))
                for r in full}
    for rule in tiered:
        outcomes[rule.index] = _by_tiers(work, rule)
    return outcomes


def _by_tiers(work: pl.DataFrame, rule: _Rule) -> _Outcome:
    """Finish a rule whose first tier is in `work`: later tiers, then the rule, each only on
    the rows still without a value, their outputs scattered back into place."""
    out = work.get_column(rule.x).alias(rule.o)
    bad = pl.repeat(False, work.height, eager=True).alias(rule.b)
    pending = work.get_column(rule.t).is_not_null() & out.is_null()
    if not pending.any():
        return _Outcome(out, bad, None)
    out = out.clone()
    columns = [SOURCE_ROW, rule.t] + ([] if rule.target.column is None
                                      else [rule.target.column])
    rest = work.select(columns).with_row_index("__pos").filter(pending)
    for tier in rule.tiers[1:]:
        rest = rest.with_columns(tier.alias(rule.x))
        done = rest.get_column(rule.x).is_not_null()
        if done.any():
            got = rest.filter(done)
            out.scatter(got.get_column("__pos"), got.get_column(rule.x))
            rest = rest.filter(~done)
        if rest.height == 0:
            return _Outcome(out, bad, None)
    slow = _evaluate_lazy(rest.lazy().drop(rule.t, rule.x, strict=False), [rule]).collect()
    at = slow.get_column("__pos")
    out.scatter(at, slow.get_column(rule.o))
    bad.scatter(at, slow.get_column(rule.b))
    return _Outcome(out, bad, _reasons(slow, rule))


def _distinct(column: pl.Series, share: float) -> pl.Series | None:
    """The distinct values of `column` when they are at most `share` of its rows."""
    if share <= 0 or column.len() < 2:
        return None
    sample = column.head(_DISTINCT_SAMPLE_ROWS)
    if share < 1 and sample.n_unique() > sample.len() * share:
        return None
    values = column.unique()
    return values if values.len() <= column.len() * share else None


def _by_value(frame: pl.DataFrame, rule: _Rule, values: pl.Series,
              fast_paths: bool) -> _Outcome:
    """Evaluate `rule` once per distinct value of its column and map the results back."""
    assert rule.target.column is not None
    column = rule.target.column
    table = pl.DataFrame({SOURCE_ROW: pl.int_range(values.len(), dtype=pl.Int64, eager=True),
                          column: values})
    each = _by_rows(table, [rule], fast_paths)[rule.index]
    table = table.with_columns(each.out, each.bad)
    mapped = frame.select(column).join(table.drop(SOURCE_ROW), on=column, how="left",
                                       nulls_equal=True, maintain_order="left")
    bad = mapped.get_column(rule.b)
    rejects = None
    if each.rejects is not None:
        reasons = each.rejects.join(table.select(SOURCE_ROW, column), on=SOURCE_ROW,
                                    how="left").drop(SOURCE_ROW, "value")
        rejects = (frame.filter(bad).select(SOURCE_ROW, column)
                   .join(reasons, on=column, how="left", nulls_equal=True,
                         maintain_order="left")
                   .select(SOURCE_ROW, pl.col(column).alias("value"), "code", "message"))
    return _Outcome(mapped.get_column(rule.o), bad, rejects)


def _by_constant(frame: pl.DataFrame, rule: _Rule) -> _Outcome:
    """A constant target: evaluated once, the same for every row."""
    one = _by_rows(pl.DataFrame({SOURCE_ROW: [0]}, schema={SOURCE_ROW: pl.Int64}), [rule],
                   False)[rule.index]
    n = frame.height
    rejects = None
    if one.rejects is not None:
        first = one.rejects.drop(SOURCE_ROW).row(0)
        rejects = frame.select(pl.col(SOURCE_ROW), *(pl.lit(v, dtype=pl.String).alias(c)
                                                     for c, v in zip(("value", "code",
                                                                      "message"), first,
                                                                     strict=True)))
    return _Outcome(pl.repeat(one.out[0], n, dtype=pl.String, eager=True).alias(rule.o),
                    pl.repeat(bool(one.bad[0]), n, eager=True).alias(rule.b), rejects)


def _outcomes(frame: pl.DataFrame, plan: NormalizePlan) -> dict[int, _Outcome]:
    outcomes: dict[int, _Outcome] = {}
    per_row: list[_Rule] = []
    for rule in plan.rules:
        if rule.target.column is None:
            outcomes[rule.index] = _by_constant(frame, rule)
            continue
        values = (_distinct(frame.get_column(rule.target.column), plan.distinct_share)
                  if rule.by_value else None)
        if values is None:
            per_row.append(rule)
        else:
            outcomes[rule.index] = _by_value(frame, rule, values, plan.fast_paths)
    if per_row:
        outcomes.update(_by_rows(frame.select(SOURCE_ROW, *dict.fromkeys(
            r.target.column for r in per_row if r.target.column is not None)),
            per_row, plan.fast_paths))
    return outcomes


def _without_nul(frame: pl.DataFrame, columns: Sequence[str],
                 ) -> tuple[pl.DataFrame, dict[str, tuple[pl.Series, pl.DataFrame]]]:
    """`frame` with every cell that holds a NUL character emptied, and per such column the
    rows hit and their (source_row, value, position). No property type accepts a NUL (HubSpot
    cannot store one): it is a reject of its own, whatever the rule would have said."""
    present = [c for c in columns if c in frame.columns]
    if not present or frame.height == 0:
        return frame, {}
    # One search per column over its values joined (a test per value costs 4x more).
    hits = frame.select(pl.col(c).str.join("").str.contains("\x00", literal=True)
                        for c in present).row(0)
    cells: dict[str, tuple[pl.Series, pl.DataFrame]] = {}
    for column, hit in zip(present, hits, strict=True):
        if not hit:
            continue
        mask = frame.get_column(column).str.contains("\x00", literal=True).fill_null(False)
        cells[column] = (mask, frame.filter(mask).select(
            SOURCE_ROW, pl.col(column).alias("value"),
            (pl.col(column).str.find("\x00", literal=True) + 1).cast(pl.String).alias("at")))
    if cells:
        frame = frame.with_columns(pl.when(~mask).then(pl.col(c)).alias(c)
                                   for c, (mask, _) in cells.items())
    return frame, cells


def _with_nul_rejects(outcomes: dict[int, _Outcome], plan: NormalizePlan,
                      cells: dict[str, tuple[pl.Series, pl.DataFrame]]) -> dict[int, _Outcome]:
    """Each rule of a column with NUL cells: those rows bad, with an INVALID_CHARACTER reason
    (the emptied cell gave no output and no reason of its own)."""
    patched = dict(outcomes)
    for rule in plan.rules:
        if rule.target.column not in cells:
            continue
        mask, rows = cells[rule.target.column]
        outcome = outcomes[rule.index]
        reasons = rows.select(SOURCE_ROW, "value", pl.lit("INVALID_CHARACTER").alias("code"),
                              pl.concat_str(pl.lit(f"value of {rule.prop.name} holds a NUL "
                                                   "character (at character "), pl.col("at"),
                                            pl.lit("); HubSpot cannot store it: remove it"))
                              .alias("message"))
        if outcome.rejects is not None:
            reasons = pl.concat([outcome.rejects, reasons.cast(outcome.rejects.schema)])
        patched[rule.index] = _Outcome(outcome.out, (outcome.bad | mask).alias(rule.b),
                                       reasons)
    return patched


def _final(rule: _Rule) -> pl.Expr:
    if rule.empty == "clear":  # no value (and not an invalid one): send "" to clear
        return (pl.when(pl.col(rule.o).is_null() & ~pl.col(rule.b)).then(pl.lit(""))
                .otherwise(pl.col(rule.o)).alias(rule.prop.name))
    return pl.col(rule.o).alias(rule.prop.name)


def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_SCHEMA)


def normalize(frame: pl.DataFrame, plan: NormalizePlan) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Apply `plan` to one batch of raw text: `(valid, rejects)` (see the module docstring).

    `frame` must hold `source_row` and every mapped source column (String).
    """
    rules = plan.rules
    if SOURCE_ROW not in frame.columns:
        raise ValueError(f"normalize needs a {SOURCE_ROW!r} column")
    frame = frame.with_columns(pl.col(SOURCE_ROW).cast(pl.Int64))
    frame, nul_cells = _without_nul(frame, plan.source_columns)
    outcomes = _outcomes(frame, plan)
    if nul_cells:
        outcomes = _with_nul_rejects(outcomes, plan, nul_cells)
    work_lazy = frame.select(SOURCE_ROW).with_columns(
        *(outcomes[r.index].out.alias(r.o) for r in rules),
        *(outcomes[r.index].bad.alias(r.b) for r in rules)).lazy()
    any_bad = pl.any_horizontal([pl.col(r.b) for r in rules]) if rules else pl.lit(False)
    sent = [pl.col(f"__f{r.index}") for r in rules]
    no_values = ~pl.any_horizontal([c.is_not_null() for c in sent]) if sent else pl.lit(True)
    required = [pl.col(f"__f{r.index}") for r in rules if r.prop.name in plan.required_any]
    missing = (~pl.any_horizontal([c.is_not_null() & (c != "") for c in required])
               if required else pl.lit(False))
    rejected = pl.col("__missing") | pl.col("__none")
    if plan.options.on_invalid == "reject-row":
        rejected = rejected | pl.col("__bad")
    helpers = ["__bad", "__missing", "__none", "__rej"]
    values = (work_lazy
              .with_columns(*(_final(r).alias(f"__f{r.index}") for r in rules),
                            any_bad.alias("__bad"))
              .with_columns(missing.alias("__missing"), no_values.alias("__none"))
              .with_columns(rejected.alias("__rej"))
              .select(pl.col(SOURCE_ROW),
                      *(pl.col(f"__f{r.index}").alias(r.prop.name) for r in rules),
                      *(pl.col(h) for h in helpers))
              .collect())
    if not (values["__bad"].any() or values["__rej"].any()):
        return values.drop(helpers), empty_rejects()
    valid = values.filter(~pl.col("__rej")).drop(helpers)
    involved = values.filter(pl.col("__bad") | pl.col("__rej"))
    suffix = "" if plan.options.on_invalid == "reject-row" else " (field not sent)"
    parts = [
        reasons.select(pl.col(SOURCE_ROW),
                       pl.lit(r.target.source_label, dtype=pl.String).alias("column"),
                       pl.col("value"), pl.col("code"),
                       pl.concat_str(pl.col("message"), pl.lit(suffix)).alias("message"))
        for r in rules if (reasons := outcomes[r.index].rejects) is not None
    ]
    needed = ", ".join(plan.required_any)
    sources = ", ".join(r.target.source_label for r in rules if r.prop.name in plan.required_any)
    parts.append(involved.filter(pl.col("__missing") & ~pl.col("__none")).select(
        pl.col(SOURCE_ROW), pl.lit(sources, dtype=pl.String).alias("column"),
        pl.lit(None, dtype=pl.String).alias("value"), pl.lit("MISSING_REQUIRED").alias("code"),
        pl.lit(f"{needed}: at least one must have a valid value "
               f"(mapped from {sources})").alias("message")))
    parts.append(involved.filter(pl.col("__none") & ~pl.col("__bad")).select(
        pl.col(SOURCE_ROW), pl.lit(None, dtype=pl.String).alias("column"),
        pl.lit(None, dtype=pl.String).alias("value"), pl.lit("NO_VALUES").alias("code"),
        pl.lit("no mapped column has a value in this row: nothing to send").alias("message")))
    rejects = pl.concat([p.cast(REJECT_SCHEMA) for p in parts]).sort(SOURCE_ROW,
                                                                     maintain_order=True)
    return valid, rejects


def rejected_rows(rejects: pl.DataFrame, valid: pl.DataFrame) -> int:
    """How many distinct rows were not sent (in `rejects` and not in `valid`)."""
    rows = rejects.get_column(SOURCE_ROW).unique()
    if valid.height == 0:
        return rows.len()
    return rows.filter(~rows.is_in(valid.get_column(SOURCE_ROW).implode())).len()


_SLASHED = r"^(\d{1,2})[/.\-](\d{1,2})[/.\-]\d{4}\b"


def date_order_evidence(frame: pl.DataFrame, columns: Sequence[str]) -> tuple[int, int, int]:
    """(values only valid as DMY, only as MDY, slashed values that fit both) in `columns`."""
    dmy = mdy = both = 0
    for column in columns:
        parts = frame.select(pl.col(column).str.strip_chars().str.extract_groups(_SLASHED)
                             .alias("p")).unnest("p")
        if parts.width < 2:
            continue
        first, second = (parts.get_column(c).cast(pl.Int32, strict=False)
                         for c in parts.columns[:2])
        counts = pl.DataFrame({"a": first, "b": second}).select(
            ((pl.col("a") > 12) & (pl.col("b") <= 12)).sum().alias("dmy"),
            ((pl.col("b") > 12) & (pl.col("a") <= 12)).sum().alias("mdy"),
            ((pl.col("a") <= 12) & (pl.col("b") <= 12) & (pl.col("a") != pl.col("b")))
            .sum().alias("both"),
        ).row(0)
        dmy, mdy, both = dmy + counts[0], mdy + counts[1], both + counts[2]
    return dmy, mdy, both
