"""Planning an import step (pure): spec + schema + headers -> a step plan.

Every configuration error of a step is found here, before any call: the mapping, the
options settled from the file (date order), and how rows are identified (`KeyPlan`).
Creates always carry a unique key, `id_property` when given, else the import-key
property holding `<job id>-<source row>`, so a retried create never duplicates.
Archive (`mode="archive"`) reads only the column that identifies each record: the record
id, or the `id_property` value (resolved to ids by batch reads); other columns are ignored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import orjson

from engine.config import DEFAULT_CONCURRENCY
from engine.dryrun import prepare
from engine.errors import ConfigError
from engine.imports.delta import DeltaMode
from engine.mapping import MappingSpec, ResolvedMapping, Target, load_mapping_file
from engine.normalize import NormalizeOptions, NormalizePlan, expressions
from engine.schema import ObjectType, Schema
from engine.source import Source, SourceSpec

Mode = Literal["create", "update", "upsert", "archive"]
OnConflict = Literal["reject", "update"]
# Rows sharing a natural key (imports/dedupe.py): later ones rejected (DUPLICATE_KEY), or
# only the first or the last of them sent (the others skipped).
Duplicates = Literal["reject", "first", "last"]
MODES: tuple[Mode, ...] = ("create", "update", "upsert", "archive")
DUPLICATES: tuple[Duplicates, ...] = ("reject", "first", "last")

IMPORT_KEY = "hsbulk_import_key"
NATURAL_KEYS = {"contacts": "email", "companies": "domain"}
RECORD_ID = "hs_object_id"
ID_HEADERS = ("hs_object_id", "record id", "id")
GROUPS = {"contacts": "contactinformation", "companies": "companyinformation",
          "deals": "dealinformation", "tickets": "ticketinformation"}


@dataclass(frozen=True, slots=True)
class ImportSpec:
    """One import step: what to read, how to map it, and how to write it."""

    object_type: ObjectType
    source: SourceSpec
    mode: Mode = "upsert"
    id_property: str | None = None
    mapping: MappingSpec = field(default_factory=MappingSpec)
    options: NormalizeOptions = field(default_factory=NormalizeOptions)
    on_conflict: OnConflict = "reject"
    step: str = "import"
    import_key: str = IMPORT_KEY
    batch_size: int = 100
    concurrency: int = DEFAULT_CONCURRENCY
    queue_batches: int = 64
    record_ids: bool = False  # keep natural key -> id in the journal (for associations)
    verify_sample: int = 0  # delta: unchanged records read back for drift (imports/drift.py)
    mirror: bool = False  # delta: archive what the state wrote and the input lost (mirror.py)
    max_archive: str = "5%"  # mirror's guard: N records or P% of the state's records
    delta: DeltaMode | None = None  # send only what changed since the state (imports/delta.py)
    state: Path | None = None  # the delta state (None: default beside the journal)
    duplicates: Duplicates = "reject"  # rows sharing a natural key (imports/dedupe.py)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.duplicates not in DUPLICATES:
            raise ConfigError(f"duplicates must be one of {', '.join(DUPLICATES)}, "
                              f"not {self.duplicates!r}")

    @property
    def object_name(self) -> str:
        return self.object_type.name or self.object_type.type_id

    def spec_hash(self, mapping: ResolvedMapping) -> str:
        """What must not change between a run and its resume."""
        described = {
            "object": self.object_type.type_id, "mode": self.mode, "id": self.id_property,
            "targets": [(t.property, t.column, t.constant, repr(t.options))
                        for t in mapping.targets],
            "options": repr(self.options), "batch": self.batch_size, "step": self.step,
            "conflict": self.on_conflict, "import_key": self.import_key,
        }
        if self.delta is not None:  # a delta run's batches hold only the changed rows
            described["delta"] = self.delta
        if self.duplicates != "reject":  # which of a key's rows are sent: other batches
            described["duplicates"] = self.duplicates
        return hashlib.sha256(orjson.dumps(described)).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class InlineAssociation:
    """An association written inside the create call: the target ids are known upfront."""

    column: str
    category: str
    type_id: int
    ids: Mapping[str, str]  # lower-cased target key -> target record id


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """How rows are identified to HubSpot and to the journal."""

    id_property: str | None  # `idProperty` sent with update/upsert ids (None: record id)
    id_column: str | None  # frame column whose value is each input's `id`
    key_property: str | None  # create: unique property read back on reconcile
    key_column: str | None  # frame column with each row's key (batches, journal, idmap)

    @property
    def prop(self) -> str:
        """The property a row's key is a value of ("" when none)."""
        return self.key_property or self.id_property or ""


@dataclass(frozen=True, slots=True)
class StepPlan:
    """Everything about a step that can be settled (or refused) before any call."""

    mapping: ResolvedMapping
    options: NormalizeOptions  # with the date order detected from the file
    plan: NormalizePlan
    keys: KeyPlan
    id_source: str | None  # update by record id, archive: the column holding the key

    def key_column(self) -> str | None:
        """The source column holding each row's natural key (None: no natural key)."""
        if self.id_source is not None:
            return self.id_source
        prop = self.keys.id_property or self.keys.key_property
        return next((t.column for t in self.mapping.targets
                     if t.property == prop and t.column is not None), None)

    def key_target(self) -> Target | None:
        """The mapping target of the key property (None: the key is a record id)."""
        if self.id_source is not None:
            return None
        prop = self.keys.id_property or self.keys.key_property
        return next((t for t in self.mapping.targets
                     if t.property == prop and t.column is not None), None)


def plan_step(spec: ImportSpec, source: Source, schema: Schema) -> StepPlan:
    """Resolve the mapping, settle options and keys: every configuration error of a step.

    Reads the input (date order detection, strict checks); shared by the import and the
    dry run, so a dry run refuses what the real run would.
    """
    if spec.mode == "archive":
        return plan_archive(spec, source, schema)
    id_source: str | None = None
    mapping_spec = spec.mapping
    if spec.mode == "update" and spec.id_property in (None, RECORD_ID):
        id_source = id_column(spec, source)
        if id_source is None:
            raise ConfigError("mode 'update' needs the record id: map a column to "
                              "hs_object_id (e.g. 'Record ID=hs_object_id') or give "
                              "id_property, a unique-value property")
        mapping_spec = _without(mapping_spec, id_source)
    mapping, options, plan = prepare(source, schema, mapping_spec, spec.options)
    return StepPlan(mapping, options, plan, plan_keys(spec, schema, mapping), id_source)


def plan_archive(spec: ImportSpec, source: Source, schema: Schema) -> StepPlan:
    """Archive: the column holding each record's id or `id_property` value, nothing else."""
    if spec.delta is not None or spec.mirror:
        raise ConfigError("--delta and --mirror do not apply to --mode archive")
    options = replace(spec.options, object_rules=False)
    empty = ResolvedMapping(())
    if spec.id_property in (None, RECORD_ID):
        column = id_column(spec, source)
        if column is None:
            raise ConfigError("mode 'archive' needs the records' ids: a column named like "
                              "'Record ID' (or mapped to hs_object_id), or give "
                              "id_property, a unique-value property")
        keys = KeyPlan(None, RECORD_ID, None, RECORD_ID)
    else:
        natural = NATURAL_KEYS.get(spec.object_name)
        prop = schema.get(spec.id_property)
        if prop is None or not (prop.unique or prop.name == natural):
            raise ConfigError(f"id_property {spec.id_property!r} is not a unique-value "
                              f"property of {spec.object_type}; use "
                              f"{natural or 'a unique-value property'} or the record id")
        column = _archive_column(spec, source, prop.name, prop.label)
        keys = KeyPlan(prop.name, prop.name, None, prop.name)
    return StepPlan(empty, options, expressions(schema, empty, options), keys, column)


def _archive_column(spec: ImportSpec, source: Source, prop: str, label: str) -> str:
    """The column holding `prop`: mapped to it (flags, mapping file), else named like it."""
    pairs = list(spec.mapping.pairs)
    if spec.mapping.file is not None:
        pairs += [(c, p) for c, p, _ in load_mapping_file(spec.mapping.file).columns]
    column = next((c for c, p in pairs if p == prop), None)
    if column is None:
        names = {prop.lower(), label.strip().lower()}
        column = next((h for h in source.columns if h.strip().lower() in names), None)
    if column is None or column not in source.columns:
        raise ConfigError(f"mode 'archive' by {prop}: no column holds it; map one "
                          f"(e.g. --map 'E-mail={prop}')")
    return column


def plan_keys(spec: ImportSpec, schema: Schema, mapping: ResolvedMapping) -> KeyPlan:
    """How rows are identified; a ConfigError for what the mode cannot work with."""
    natural = NATURAL_KEYS.get(spec.object_name)
    if spec.delta is not None and spec.mode == "create":
        raise ConfigError("--delta needs a natural key: use --mode upsert with --id-property "
                          f"(e.g. {natural or 'a unique-value property'}) or --mode update")
    if spec.id_property is not None:
        _check_id_property(spec, schema, mapping, natural)
    if spec.mode == "upsert":
        if spec.id_property is None or spec.id_property == RECORD_ID:
            raise ConfigError("mode 'upsert' needs id_property, a unique-value property "
                              f"(e.g. {natural or 'a custom unique property'})")
        return KeyPlan(spec.id_property, spec.id_property, None, spec.id_property)
    if spec.mode == "update":
        if spec.id_property is None or spec.id_property == RECORD_ID:
            return KeyPlan(None, RECORD_ID, None, RECORD_ID)
        return KeyPlan(spec.id_property, spec.id_property, None, spec.id_property)
    if spec.id_property is not None:
        return KeyPlan(None, None, spec.id_property, spec.id_property)
    return KeyPlan(None, None, spec.import_key, spec.import_key)


def _check_id_property(spec: ImportSpec, schema: Schema, mapping: ResolvedMapping,
                       natural: str | None) -> None:
    assert spec.id_property is not None
    prop = schema.get(spec.id_property)
    if prop is None:
        raise ConfigError(f"id_property {spec.id_property!r} is not a property of "
                          f"{spec.object_type}")
    if not (prop.unique or prop.name == natural or prop.name == RECORD_ID):
        raise ConfigError(
            f"id_property {prop.name!r} does not have unique values in "
            f"{spec.object_type}; use {natural or 'a unique-value property'}")
    if prop.name != RECORD_ID and prop.name not in {t.property for t in mapping.targets}:
        raise ConfigError(f"id_property {prop.name!r} is not mapped from any column")


def id_column(spec: ImportSpec, source: Source) -> str | None:
    """Update by record id: the source column that holds it."""
    for src, prop in spec.mapping.pairs:
        if prop == RECORD_ID:
            return src
    for header in source.columns:
        if header.strip().lower() in ID_HEADERS:
            return header
    return None


def job_id(spec_hash: str, digest: str) -> str:
    """The id behind this run's import keys: the spec and the input's content."""
    return hashlib.sha256(f"{spec_hash}:{digest}".encode()).hexdigest()[:12]


def object_path(obj: ObjectType, tail: str) -> str:
    return f"/crm/v3/objects/{obj.path_name}/{tail}"


def _without(spec: MappingSpec, column: str) -> MappingSpec:
    """The mapping without the record-id column (it is the input's id, not a property)."""
    return MappingSpec(
        pairs=tuple(p for p in spec.pairs if p[0] != column), file=spec.file, auto=spec.auto,
        reserved=spec.reserved | {column}, strict_columns=spec.strict_columns,
        ignore_unknown=spec.ignore_unknown)
