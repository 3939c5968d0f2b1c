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

    [constants]
    hs_lead_status = "NEW"

Columns named `hsbulk_*` are hsbulk's own (the reasons a rejects file adds to each row, so
that a fixed rejects file imports again with the same command): they are never matched to
a property, never listed as unmapped (nor refused by `strict_columns`), and mapping one
explicitly is a `ConfigError`.
"""

from __future__ import annotations

import builtins
import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from engine.config import load_toml
from engine.errors import ConfigError
from engine.schema import Property, Schema

DateOrder = Literal["YMD", "DMY", "MDY"]
CheckboxMode = Literal["replace", "append"]
EmptyMode = Literal["skip", "clear"]

_COLUMN_OPTION_KEYS = frozenset({"property", "checkbox", "separators", "date_order", "empty"})
RESERVED_PREFIX = "hsbulk_"


def is_reserved(column: str) -> bool:
    """An `hsbulk_*` column: hsbulk's own annotation, never a property's value."""
    return column.strip().lower().startswith(RESERVED_PREFIX)


@dataclass(frozen=True, slots=True)
class ColumnOptions:
    """Per-column overrides of the run-wide `NormalizeOptions` (None = use the run's)."""

    checkbox: CheckboxMode | None = None
    separators: str | None = None
    date_order: DateOrder | None = None
    empty: EmptyMode | None = None


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


def load_mapping_file(path: Path) -> tuple[list[tuple[str, str, ColumnOptions]], dict[str, str]]:
    """Read a mapping TOML file: ([(column, property, options)], {property: constant})."""
    data = load_toml(path, "mapping file")
    unknown = set(data) - {"columns", "constants"}
    if unknown:
        raise ConfigError(f"mapping file {path}: unknown section(s) {sorted(unknown)}; "
                          "expected [columns] and [constants]")
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
        separators = value.get("separators")
        if separators is not None and (not isinstance(separators, str) or not separators):
            raise ConfigError(f"{where}: separators must be a non-empty string such as \";,|\"")
        options = ColumnOptions(
            checkbox=_choice(value.get("checkbox"), get_args(CheckboxMode), "checkbox", where),
            separators=separators,
            date_order=_choice(value.get("date_order"), get_args(DateOrder), "date_order", where),
            empty=_choice(value.get("empty"), get_args(EmptyMode), "empty", where),
        )
        columns.append((column, value["property"], options))
    constants: dict[str, str] = {}
    for prop, value in (data.get("constants") or {}).items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, str | int | float):
            raise ConfigError(f"mapping file {path}: constant {prop!r} must be a plain value")
        constants[prop] = str(value)
    return columns, constants


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
    one property, or unmapped columns under `strict_columns`.
    """
    headers = list(headers)
    explicit, constants = _explicit_entries(spec)
    found = _Resolution(spec, schema)
    for column, prop_name, options in explicit:
        problem = _column_problem(column, headers, spec.reserved)
        if problem is not None:
            found.errors.append(problem)
        else:
            found.add(Target(prop_name, column=column, options=options), f"column {column!r}")
    for prop_name, value in constants.items():
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
    return ResolvedMapping(tuple(targets), tuple(unmapped), tuple(found.ignored),
                           tuple(h for h in headers if h in spec.reserved), tuple(found.notes))


def _explicit_entries(spec: MappingSpec) -> tuple[list[tuple[str, str, ColumnOptions]],
                                                   dict[str, str]]:
    """The pairs, then the mapping file's columns not already paired; its constants."""
    explicit = [(c, p, ColumnOptions()) for c, p in spec.pairs]
    if spec.file is None:
        return explicit, {}
    file_columns, constants = load_mapping_file(spec.file)
    seen = {c for c, _, _ in explicit}
    return explicit + [entry for entry in file_columns if entry[0] not in seen], constants


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

