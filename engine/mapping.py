"""Which source column feeds which HubSpot property.

Order of precedence: explicit `--map "Source Column=property"` pairs, then the mapping file
(TOML: `[columns]`, `[constants]`), then automatic matching of a header to a property's
name or label (case-insensitive). Pure: reads the mapping file, nothing else.

Mapping file::

    [columns]
    "E-mail Address" = "email"
    "Stage" = { property = "lifecyclestage" }
    "Interests" = { property = "interests", checkbox = "append", separators = ",;" }
    "Birthday" = { property = "date_of_birth", date_order = "DMY", empty = "clear" }
    "Notes" = { property = "notes", trim = false }

    [columns."Lifecycle Stage"]
    property = "lifecyclestage"
    values = { MQL = "marketingqualifiedlead", SQL = "salesqualifiedlead" }

    [constants]
    hs_lead_status = "NEW"

    [values.industry]   # run-wide, for every column mapped to the property
    IT = "Information Technology and Services"

Values are trimmed of surrounding whitespace before anything else; `trim = false` keeps a
text value as it is. A value map (`values` of a column, or `[values.<property>]` for every
column feeding that property; the column's own entries win) replaces a whole value, its key
matched after trimming and ignoring case; for a multi-checkbox it replaces each item. What
it gives then goes through the property's usual rule (so it may be an option's label), and
a map to `""` makes the value empty. A target the property would refuse is a `ConfigError`
when the plan is built (normalize.expressions).

Columns named `hsbulk_*` are hsbulk's own (the reasons a rejects file adds to each row, so
that a fixed rejects file imports again with the same command): they are never matched to
a property, never listed as unmapped (nor refused by `strict_columns`), and mapping one
explicitly is a `ConfigError`.
"""

from __future__ import annotations

import builtins
import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from engine.config import load_toml
from engine.errors import ConfigError
from engine.schema import Property, Schema

DateOrder = Literal["YMD", "DMY", "MDY"]
CheckboxMode = Literal["replace", "append"]
EmptyMode = Literal["skip", "clear"]

_COLUMN_OPTION_KEYS = frozenset({"property", "checkbox", "separators", "date_order", "empty",
                                 "trim", "values"})
_FILE_SECTIONS = ("columns", "constants", "values")
RESERVED_PREFIX = "hsbulk_"


def is_reserved(column: str) -> bool:
    """An `hsbulk_*` column: hsbulk's own annotation, never a property's value."""
    return column.strip().lower().startswith(RESERVED_PREFIX)


@dataclass(frozen=True, slots=True)
class ValueMap:
    """Source values -> property values: (key as written, value); keys match trimmed and
    ignoring case (`lookup`)."""

    pairs: tuple[tuple[str, str], ...]
    origin: str = field(default="", compare=False, repr=False)  # where errors point

    @builtins.property
    def lookup(self) -> dict[str, str]:
        return {fold_key(key): value for key, value in self.pairs}

    def merged(self, own: ValueMap | None) -> ValueMap:
        """This (run-wide) map under a column's `own` entries."""
        if own is None:
            return self
        keyed = {fold_key(k): (k, v) for k, v in (*self.pairs, *own.pairs)}
        return ValueMap(tuple(keyed.values()), own.origin)


def fold_key(key: str) -> str:
    """How a value map's keys and the values they match are compared."""
    return key.strip().lower()


@dataclass(frozen=True, slots=True)
class ColumnOptions:
    """Per-column overrides of the run-wide `NormalizeOptions` (None = use the run's)."""

    checkbox: CheckboxMode | None = None
    separators: str | None = None
    date_order: DateOrder | None = None
    empty: EmptyMode | None = None
    trim: bool = True
    values: ValueMap | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """One property to send, fed by a source column or by a constant."""

    property: str
    column: str | None = None
    constant: str | None = None
    options: ColumnOptions = ColumnOptions()

    @builtins.property
    def source_label(self) -> str:
        """How rejects name where the value came from."""
        return self.column if self.column is not None else f"={self.property}"


@dataclass(frozen=True, slots=True)
class MappingSpec:
    """What the user asked for, before the schema and the headers are known."""

    pairs: tuple[tuple[str, str], ...] = ()
    file: Path | None = None
    auto: bool = True
    reserved: frozenset[str] = frozenset()
    strict_columns: bool = False
    ignore_unknown: bool = False

    @classmethod
    def from_flags(cls, maps: Sequence[str] = (), file: Path | None = None,
                   **kwargs: Any) -> MappingSpec:
        """Build from repeated `--map "Source Column=property"` flags."""
        return cls(pairs=tuple(parse_map_flag(text) for text in maps), file=file, **kwargs)


@dataclass(frozen=True, slots=True)
class ResolvedMapping:
    """The outcome: targets to normalise, and what was left out and why."""

    targets: tuple[Target, ...]
    unmapped: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    reserved: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def columns(self) -> tuple[str, ...]:
        """Source columns that feed at least one property."""
        return tuple(dict.fromkeys(t.column for t in self.targets if t.column is not None))


def parse_map_flag(text: str) -> tuple[str, str]:
    """`"Source Column=property"` -> ("Source Column", "property"); splits on the last `=`."""
    source, sep, prop = text.rpartition("=")
    if not sep or not source.strip() or not prop.strip():
        raise ConfigError(f"map {text!r} is not of the form \"Source Column=property\"")
    return source.strip(), prop.strip()


def _choice(value: Any, allowed: tuple[str, ...], what: str, where: str) -> Any:
    if value is None:
        return None
    if value not in allowed:
        raise ConfigError(f"{where}: {what} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _plain(value: Any) -> str | None:
    """A TOML scalar as the text a cell would hold (None: not a plain value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, str | int | float) else None


def value_map(table: Any, where: str, origin: str | None = None) -> ValueMap:
    """`{ MQL = "marketingqualifiedlead", ... }` -> a `ValueMap` (no two keys alike once
    folded); `where` names it in errors now, `origin` (default `where`) when the plan
    checks its targets."""
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{where}: values must be a table such as "
                          "{ MQL = \"marketingqualifiedlead\" }")
    pairs: dict[str, tuple[str, str]] = {}
    for key, target in table.items():
        text = _plain(target)
        if text is None:
            raise ConfigError(f"{where}: value map {key!r} must give a plain value")
        folded = fold_key(key)
        if pairs.get(folded, (key, text))[1] != text:
            raise ConfigError(f"{where}: value map gives {key!r} two values "
                              "(keys are matched ignoring case and surrounding spaces)")
        pairs[folded] = (key, text)
    return ValueMap(tuple(pairs.values()), where if origin is None else origin)


@dataclass(frozen=True, slots=True)
class MappingFile:
    """A mapping file's sections: columns, constants and run-wide value maps by property."""

    columns: tuple[tuple[str, str, ColumnOptions], ...] = ()
    constants: tuple[tuple[str, str], ...] = ()
    values: tuple[tuple[str, ValueMap], ...] = ()


def load_mapping_file(path: Path) -> MappingFile:
    """Read a mapping TOML file (see the module docstring)."""
    data = load_toml(path, "mapping file")
    unknown = set(data) - set(_FILE_SECTIONS)
    if unknown:
        raise ConfigError(f"mapping file {path}: unknown section(s) {sorted(unknown)}; "
                          "expected [columns], [constants] and [values.<property>]")
    columns: list[tuple[str, str, ColumnOptions]] = []
    for column, value in (data.get("columns") or {}).items():
        where = f"mapping file {path}, column {column!r}"
        if isinstance(value, str):
            columns.append((column, value, ColumnOptions()))
            continue
        if not isinstance(value, dict) or not isinstance(value.get("property"), str):
            raise ConfigError(f"{where}: give a property name or a table with `property = ...`")
        extra = set(value) - _COLUMN_OPTION_KEYS
        if extra:
            raise ConfigError(f"{where}: unknown option(s) {sorted(extra)}; "
                              f"allowed: {sorted(_COLUMN_OPTION_KEYS)}")
        columns.append((column, value["property"], _column_options(value, where, path)))
    constants: dict[str, str] = {}
    for prop, value in (data.get("constants") or {}).items():
        text = _plain(value)
        if text is None:
            raise ConfigError(f"mapping file {path}: constant {prop!r} must be a plain value")
        constants[prop] = text
    values = data.get("values") or {}
    if not isinstance(values, dict):
        raise ConfigError(f"mapping file {path}: [values] holds one table per property")
    return MappingFile(tuple(columns), tuple(constants.items()),
                       tuple((prop, value_map(table, f"mapping file {path}, [values.{prop}]"))
                             for prop, table in values.items()))


def _column_options(value: dict[str, Any], where: str, path: Path) -> ColumnOptions:
    separators = value.get("separators")
    if separators is not None and (not isinstance(separators, str) or not separators):
        raise ConfigError(f"{where}: separators must be a non-empty string such as \";,|\"")
    trim = value.get("trim", True)
    if not isinstance(trim, bool):
        raise ConfigError(f"{where}: trim must be true or false, not {trim!r}")
    return ColumnOptions(
        checkbox=_choice(value.get("checkbox"), get_args(CheckboxMode), "checkbox", where),
        separators=separators,
        date_order=_choice(value.get("date_order"), get_args(DateOrder), "date_order", where),
        empty=_choice(value.get("empty"), get_args(EmptyMode), "empty", where),
        trim=trim,
        values=(value_map(value["values"], where, f"mapping file {path}")
                if "values" in value else None),
    )


def suggest(name: str, schema: Schema, limit: int = 3) -> list[str]:
    """The property names closest to `name` (by name and by label)."""
    writable = [p for p in schema.properties if p.is_writable]
    names = [p.name for p in writable]
    by_label = {p.label.lower(): p.name for p in writable}
    found = difflib.get_close_matches(name, names, n=limit, cutoff=0.6)
    found += [by_label[m] for m in difflib.get_close_matches(name.lower(), list(by_label),
                                                             n=limit, cutoff=0.6)]
    return list(dict.fromkeys(found))[:limit]


def _why_not_writable(prop: Property | None) -> str | None:
    if prop is None:
        return "unknown"
    if prop.calculated:
        return "calculated"
    if prop.read_only:
        return "read-only"
    if not prop.is_writable:
        return f"of type {prop.type}, which cannot be written"
    return None


def _match_header(header: str, schema: Schema) -> tuple[Property | None, str | None]:
    """Automatic match by name, then by label; (property, note when skipped)."""
    key = header.strip().lower()
    by_name = [p for p in schema.properties if p.name.lower() == key]
    candidates = by_name or list(schema.by_label(header))
    if not candidates:
        return None, None
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        return None, (f"column {header!r} matches several properties ({names}): "
                      "map it explicitly")
    prop = candidates[0]
    why = _why_not_writable(prop)
    if why:
        return None, f"column {header!r} matches {why} property {prop.name!r}: ignored"
    return prop, None


def resolve_mapping(spec: MappingSpec, headers: Iterable[str], schema: Schema) -> ResolvedMapping:
    """Turn the user's mapping into targets checked against the headers and the schema.

    Raises `ConfigError` (before anything is sent) for a column not in the file, a property
    that is unknown, read-only or calculated (unless `ignore_unknown`), two columns feeding
    one property, or unmapped columns under `strict_columns`. Run-wide value maps
    (`[values.<property>]`) go to every column target of their property.
    """
    headers = list(headers)
    entries = _explicit_entries(spec)
    explicit = entries.columns
    found = _Resolution(spec, schema)
    for column, prop_name, options in explicit:
        problem = _column_problem(column, headers, spec.reserved)
        if problem is not None:
            found.errors.append(problem)
        else:
            found.add(Target(prop_name, column=column, options=options), f"column {column!r}")
    for prop_name, value in entries.constants:
        found.add(Target(prop_name, constant=value), f"constant {value!r}")
    unmapped = found.match_headers(headers, {c for c, _, _ in explicit})
    if spec.strict_columns and unmapped:
        found.errors.append(f"columns not mapped to any property: "
                            f"{', '.join(map(repr, unmapped))} (map them, or allow unmapped "
                            "columns by turning strict_columns off)")
    if found.errors:
        raise ConfigError("mapping: " + "; ".join(found.errors))
    position = {h: i for i, h in enumerate(headers)}
    targets = sorted(found.targets, key=lambda t: position.get(t.column, len(position))
                     if t.column is not None else len(position))
    run_wide = dict(entries.values)
    targets = [_with_value_map(t, run_wide.get(t.property)) for t in targets]
    return ResolvedMapping(tuple(targets), tuple(unmapped), tuple(found.ignored),
                           tuple(h for h in headers if h in spec.reserved), tuple(found.notes))


def _explicit_entries(spec: MappingSpec) -> MappingFile:
    """The pairs, then the mapping file's columns not already paired; its constants and
    run-wide value maps."""
    explicit = tuple((c, p, ColumnOptions()) for c, p in spec.pairs)
    if spec.file is None:
        return MappingFile(explicit)
    loaded = load_mapping_file(spec.file)
    seen = {c for c, _, _ in explicit}
    return MappingFile(explicit + tuple(e for e in loaded.columns if e[0] not in seen),
                       loaded.constants, loaded.values)


def _with_value_map(target: Target, run_wide: ValueMap | None) -> Target:
    """`target` with the run-wide value map of its property under its own entries."""
    if run_wide is None or target.column is None:
        return target
    options = replace(target.options, values=run_wide.merged(target.options.values))
    return replace(target, options=options)


def _column_problem(column: str, headers: list[str], reserved: frozenset[str]) -> str | None:
    """Why an explicitly mapped column cannot feed a property (None: it can)."""
    if column not in headers:
        close = difflib.get_close_matches(column, headers, n=3, cutoff=0.6)
        return (f"column {column!r} is not in the file"
                + (f"; did you mean {', '.join(map(repr, close))}?" if close else ""))
    if column in reserved:
        return f"column {column!r} is reserved for associations"
    if is_reserved(column):
        return (f"column {column!r} is hsbulk's own (a rejects file's reason columns start "
                f"with {RESERVED_PREFIX!r}) and is never imported")
    return None


@dataclass(slots=True)
class _Resolution:
    """Targets found so far, and what was ignored, noted or wrong on the way."""

    spec: MappingSpec
    schema: Schema
    targets: list[Target] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fed_by: dict[str, str] = field(default_factory=dict)

    def add(self, target: Target, source: str) -> None:
        """An explicit target: kept if its property may be written and is not fed twice."""
        if self._is_writable(target.property, source):
            self._claim(target.property, source)
            self.targets.append(target)

    def match_headers(self, headers: list[str], mapped: set[str]) -> list[str]:
        """Match the other headers automatically; returns the ones left unmapped."""
        unmapped: list[str] = []
        for header in headers:
            if header in mapped or header in self.spec.reserved or is_reserved(header):
                continue
            prop, note = _match_header(header, self.schema) if self.spec.auto else (None, None)
            if note:
                self.notes.append(note)
            if prop is None or prop.name in self.fed_by:
                unmapped.append(header)
                continue
            self._claim(prop.name, f"column {header!r}")
            self.targets.append(Target(prop.name, column=header))
        return unmapped

    def _is_writable(self, prop_name: str, source: str) -> bool:
        why = _why_not_writable(self.schema.get(prop_name))
        if why is None:
            return True
        if self.spec.ignore_unknown:
            self.ignored.append(f"{source} -> {prop_name} ({why})")
            return False
        hint = suggest(prop_name, self.schema)
        self.errors.append(f"{source} -> {prop_name!r}: {why} property"
                           + (f"; did you mean {', '.join(hint)}?" if hint else ""))
        return False

    def _claim(self, prop_name: str, source: str) -> None:
        if prop_name in self.fed_by:
            self.errors.append(f"property {prop_name!r} is fed by both "
                               f"{self.fed_by[prop_name]} and {source}")
        self.fed_by[prop_name] = source

