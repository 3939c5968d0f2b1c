"""Owners, pipelines and stages by the names people use: e-mails, full names and labels
become the ids HubSpot takes.

HubSpot's record properties name owners and stages by internal id (`hubspot_owner_id`
takes an owner id; `dealstage` a stage id of the deal's pipeline), while files migrated
from another CRM hold owners' e-mails and stage labels. A step that maps one of these
properties reads the owners (`/crm/v3/owners`, every page) or the pipelines
(`/crm/v3/pipelines/{deals|tickets}`) once per run (`fetch_lookups`); a step that maps
none of them makes no call and pays nothing. `Lookups.apply` then resolves each
normalised batch with polars (`replace_strict` over small dictionaries, no per-row
Python): a value that names nothing, or several owners, is a local reject with its own
code and is never sent.

- owner: an owner id as is, else an e-mail (case-insensitive, trimmed), else a full name
  "First Last" that exactly one owner has. UNKNOWN_OWNER / AMBIGUOUS_OWNER.
- pipeline (deals `pipeline`, tickets `hs_pipeline`): an id or a label (case-insensitive).
  UNKNOWN_PIPELINE.
- stage (deals `dealstage`, tickets `hs_pipeline_stage`): an id or a label of the row's
  pipeline: the one the row gives, else the default pipeline (deals: `default`; tickets:
  the lowest displayOrder). Labels repeat across pipelines, so a stage resolves only
  within its pipeline. STAGE_NOT_IN_PIPELINE names the pipeline and lists its stages.
  A row whose pipeline is unknown is reported for its pipeline only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from engine.errors import ConfigError
from engine.normalize import REJECT_SCHEMA, NormalizePlan
from engine.schema import JsonGetter, ObjectType
from engine.source import SOURCE_ROW

OWNER_PROPERTY = "hubspot_owner_id"
# object type name -> (its pipeline property, its stage property)
PIPELINE_PROPERTIES = {"deals": ("pipeline", "dealstage"),
                       "tickets": ("hs_pipeline", "hs_pipeline_stage")}
DEFAULT_DEAL_PIPELINE = "default"
OWNERS_PAGE = 500  # the owners endpoint's largest page
_AMBIGUOUS = "\x00ambiguous"  # marks a name several owners share (never an owner id)
_SEP = "\x1f"  # between a pipeline id and a stage key


@dataclass(frozen=True, slots=True)
class Owner:
    id: str
    email: str
    first_name: str
    last_name: str

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"


@dataclass(frozen=True, slots=True)
class Stage:
    id: str
    label: str


@dataclass(frozen=True, slots=True)
class Pipeline:
    id: str
    label: str
    display_order: int
    stages: tuple[Stage, ...]

    def describe_stages(self) -> str:
        return ", ".join(f"{s.label} ({s.id})" for s in self.stages)


def _key(value: pl.Expr) -> pl.Expr:
    """How a value is compared: trimmed, inner spaces collapsed, lower case."""
    return value.str.strip_chars().str.replace_all(r"\s+", " ").str.to_lowercase()


def _text_key(value: str) -> str:
    return " ".join(value.split()).lower()


def _resolved(value: pl.Expr, table: Mapping[str, str]) -> pl.Expr:
    return _key(value).replace_strict(dict(table), default=None, return_dtype=pl.String)


def _rejects(frame: pl.DataFrame, bad: pl.Expr, column: str, value: pl.Expr, code: str,
             message: pl.Expr) -> pl.DataFrame:
    return frame.filter(bad).select(
        pl.col(SOURCE_ROW).cast(pl.Int64),
        pl.lit(column, dtype=pl.String).alias("column"),
        value.cast(pl.String).alias("value"),
        pl.lit(code, dtype=pl.String).alias("code"),
        message.cast(pl.String).alias("message"))


def _given(value: pl.Expr) -> pl.Expr:
    """A value to resolve ("" is an explicit clear with `--empty clear`: sent as is)."""
    return value.is_not_null() & (value != "")


# --- owners -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OwnerLookup:
    """`hubspot_owner_id` from owner ids, e-mails or unique full names."""

    column: str  # where rejects say the value came from
    keys: Mapping[str, str]  # compared key -> owner id (or _AMBIGUOUS)
    shared: Mapping[str, str]  # compared key of a shared name -> its owners' ids

    @classmethod
    def of(cls, owners: Iterable[Owner], column: str) -> OwnerLookup:
        by_name: dict[str, list[str]] = defaultdict(list)
        owners = tuple(owners)
        for owner in owners:
            by_name[_text_key(owner.full_name)].append(owner.id)
        keys = {name: ids[0] if len(ids) == 1 else _AMBIGUOUS for name, ids in by_name.items()}
        keys |= {_text_key(o.email): o.id for o in owners if o.email}
        keys |= {o.id.lower(): o.id for o in owners}  # an id wins over anything else
        shared = {name: ", ".join(ids) for name, ids in by_name.items() if len(ids) > 1}
        return cls(column, keys, shared)

    def resolve(self, frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.Expr]:
        """The frame with owner ids (null where invalid), its rejects, and the bad flag (a
        work column: the value column is replaced)."""
        value = pl.col(OWNER_PROPERTY)
        owner = pl.col("__owner")
        work = frame.with_columns(_resolved(value, self.keys).alias("__owner")).with_columns(
            (_given(value) & owner.is_null()).alias("__owner_unknown"),
            (owner == _AMBIGUOUS).fill_null(False).alias("__owner_ambiguous"))
        unknown, ambiguous = pl.col("__owner_unknown"), pl.col("__owner_ambiguous")
        shared = _key(value).replace_strict(dict(self.shared), default="",
                                            return_dtype=pl.String)
        ambiguous_message = pl.concat_str(
            _quoted(value), pl.lit(" is the name of several owners (ids "), shared,
            pl.lit("): give the owner's e-mail or id"))
        rejects = pl.concat([
            _rejects(work, unknown, self.column, value, "UNKNOWN_OWNER",
                     _unknown_owner_message(value)),
            _rejects(work, ambiguous, self.column, value, "AMBIGUOUS_OWNER", ambiguous_message),
        ])
        bad = unknown | ambiguous
        out = work.with_columns(
            pl.when(value == "").then(value).when(~bad).then(owner).alias(OWNER_PROPERTY))
        return out, rejects, bad


def _quoted(value: pl.Expr) -> pl.Expr:
    return pl.concat_str(pl.lit("'"), value.str.strip_chars(), pl.lit("'"))


def _unknown_owner_message(value: pl.Expr) -> pl.Expr:
    """What the value looked like: an e-mail, an id or a name."""
    return (pl.when(value.str.contains("@", literal=True))
            .then(pl.concat_str(pl.lit("no owner with e-mail "), _quoted(value)))
            .when(value.str.strip_chars().str.contains(r"^\d+$"))
            .then(pl.concat_str(pl.lit("no owner with id "), _quoted(value)))
            .otherwise(pl.concat_str(pl.lit("no owner named "), _quoted(value),
                                     pl.lit(" (owners are matched by id, e-mail or full "
                                            "name)"))))


# --- pipelines and stages -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PipelineLookup:
    """A pipeline and its stages from ids or labels, each stage within its row's pipeline."""

    pipeline_property: str
    stage_property: str
    pipeline_column: str | None  # None: the step does not map the pipeline
    stage_column: str | None  # None: the step does not map the stage
    pipelines: tuple[Pipeline, ...]
    default_id: str

    @classmethod
    def of(cls, object_name: str, pipelines: Iterable[Pipeline],
           columns: Mapping[str, str]) -> PipelineLookup:
        pipeline_property, stage_property = PIPELINE_PROPERTIES[object_name]
        pipelines = tuple(pipelines)
        if not pipelines:
            raise ConfigError(f"{object_name} have no pipelines in this portal: "
                              f"{pipeline_property}/{stage_property} cannot be set")
        ids = {p.id for p in pipelines}
        default = (DEFAULT_DEAL_PIPELINE
                   if object_name == "deals" and DEFAULT_DEAL_PIPELINE in ids
                   else min(pipelines, key=lambda p: p.display_order).id)
        return cls(pipeline_property, stage_property, columns.get(pipeline_property),
                   columns.get(stage_property), pipelines, default)

    def _pipeline_keys(self) -> dict[str, str]:
        keys = {_text_key(p.label): p.id for p in self.pipelines}
        return keys | {p.id.lower(): p.id for p in self.pipelines}

    def _stage_keys(self) -> dict[str, str]:
        keys: dict[str, str] = {}
        for p in self.pipelines:
            keys |= {f"{p.id}{_SEP}{_text_key(s.label)}": s.id for s in p.stages}
            keys |= {f"{p.id}{_SEP}{s.id.lower()}": s.id for s in p.stages}
        return keys

    def resolve(self, frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.Expr]:
        """The frame with pipeline and stage ids (null where invalid), rejects, and the bad
        flag (a work column: the value columns are replaced)."""
        default = pl.lit(self.default_id, dtype=pl.String)
        bad_pipeline = pl.col("__pipe_bad")
        if self.pipeline_column is None:
            work = frame.with_columns(default.alias("__row_pipe"),
                                      pl.lit(False).alias("__pipe_bad"))
            rejects = pl.DataFrame(schema=REJECT_SCHEMA)
        else:
            work, rejects = self._pipelines(frame, self.pipeline_column)
        if self.stage_column is None:
            return work, rejects, bad_pipeline
        work, stage_rejects = self._stages(work, self.stage_column)
        return work, pl.concat([rejects, stage_rejects]), bad_pipeline | pl.col("__stage_bad")

    def _pipelines(self, frame: pl.DataFrame, column: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        given = pl.col(self.pipeline_property)
        found = pl.col("__pipe")
        work = frame.with_columns(_resolved(given, self._pipeline_keys()).alias("__pipe"))
        work = work.with_columns(
            (_given(given) & found.is_null()).alias("__pipe_bad"),
            pl.when(_given(given)).then(found)
            .otherwise(pl.lit(self.default_id, dtype=pl.String)).alias("__row_pipe"))
        bad = pl.col("__pipe_bad")
        listing = ", ".join(f"{p.label} ({p.id})" for p in self.pipelines)
        rejects = _rejects(work, bad, column, given, "UNKNOWN_PIPELINE", pl.concat_str(
            pl.lit("no pipeline '"), given.str.strip_chars(),
            pl.lit(f"'; the pipelines are: {listing}")))
        work = work.with_columns(pl.when(given == "").then(given).when(~bad).then(found)
                                 .alias(self.pipeline_property))
        return work, rejects

    def _stages(self, work: pl.DataFrame, column: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Each stage within its row's pipeline (`__row_pipe`); none where it is unknown."""
        given = pl.col(self.stage_property)
        pipe, found = pl.col("__row_pipe"), pl.col("__stage")
        key = pl.concat_str(pipe, pl.lit(_SEP), _key(given))
        work = work.with_columns(key.replace_strict(self._stage_keys(), default=None,
                                                    return_dtype=pl.String).alias("__stage"))
        work = work.with_columns(
            (_given(given) & ~pl.col("__pipe_bad") & found.is_null()).alias("__stage_bad"))
        bad = pl.col("__stage_bad")
        labels = {p.id: p.label for p in self.pipelines}
        stages = {p.id: p.describe_stages() for p in self.pipelines}
        message = pl.concat_str(
            pl.lit("'"), given.str.strip_chars(), pl.lit("' is not a stage of pipeline '"),
            pipe.replace_strict(labels, default="", return_dtype=pl.String),
            pl.lit("' ("), pipe, pl.lit("); its stages: "),
            pipe.replace_strict(stages, default="", return_dtype=pl.String))
        rejects = _rejects(work, bad, column, given, "STAGE_NOT_IN_PIPELINE", message)
        work = work.with_columns(pl.when(given == "").then(given)
                                 .when(~bad & ~pl.col("__pipe_bad")).then(found)
                                 .alias(self.stage_property))
        return work, rejects


# --- both ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lookups:
    """What one step resolves; `apply` runs on each normalised batch."""

    owner: OwnerLookup | None
    pipeline: PipelineLookup | None
    drop_field: bool = False  # --on-invalid drop-field: send the row without the bad field

    def apply(self, valid: pl.DataFrame, rejects: pl.DataFrame,
              ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """`normalize`'s (valid, rejects) with ids in place of names and the rows whose
        owner, pipeline or stage names nothing moved to the rejects (whole-row rejects),
        or kept without the bad field (drop-field)."""
        if valid.height == 0:
            return valid, rejects
        columns = valid.columns
        work, found, bad = valid, [], pl.lit(False)
        for lookup in (self.owner, self.pipeline):
            if lookup is not None:
                work, reasons, flagged = lookup.resolve(work)
                found += [reasons.cast(REJECT_SCHEMA)] if reasons.height else []
                bad = bad | flagged
        if not self.drop_field:
            work = work.filter(~bad)
        if not found:
            return work.select(columns), rejects
        return (work.select(columns),
                pl.concat([rejects.cast(REJECT_SCHEMA), *found]).sort(SOURCE_ROW,
                                                                      maintain_order=True))


def mapped_columns(plan: NormalizePlan) -> dict[str, str]:
    """Property -> where its values come from (a source column, or `=property`)."""
    return {rule.prop.name: rule.target.source_label for rule in plan.rules}


def is_needed(object_type: ObjectType, plan: NormalizePlan) -> bool:
    """Whether a step maps an owner, pipeline or stage property (else: no lookup at all)."""
    names = {OWNER_PROPERTY, *PIPELINE_PROPERTIES.get(object_type.name or "", ())}
    return not names.isdisjoint(plan.properties)


async def fetch_lookups(client: JsonGetter, object_type: ObjectType, plan: NormalizePlan,
                        ) -> Lookups | None:
    """Read what the step needs, once per run; None (and no call) when it needs nothing."""
    if not is_needed(object_type, plan):
        return None
    columns = mapped_columns(plan)
    owner = None
    if OWNER_PROPERTY in columns:
        owner = OwnerLookup.of(await fetch_owners(client), columns[OWNER_PROPERTY])
    pipeline = None
    name = object_type.name or ""
    if name in PIPELINE_PROPERTIES and not columns.keys().isdisjoint(PIPELINE_PROPERTIES[name]):
        pipeline = PipelineLookup.of(name, await fetch_pipelines(client, name), columns)
    return Lookups(owner, pipeline, drop_field=plan.options.on_invalid == "drop-field")


async def fetch_owners(client: JsonGetter) -> list[Owner]:
    """Every active owner, page by page."""
    owners: list[Owner] = []
    after: str | None = None
    while True:
        params = {"limit": str(OWNERS_PAGE), **({"after": after} if after else {})}
        body = await client.get_json("/crm/v3/owners", params)
        owners += parse_owners(body)
        after = _next_after(body)
        if after is None:
            return owners


async def fetch_pipelines(client: JsonGetter, object_name: str) -> list[Pipeline]:
    return parse_pipelines(await client.get_json(f"/crm/v3/pipelines/{object_name}"))


def _next_after(body: Any) -> str | None:
    try:
        after = body["paging"]["next"]["after"]
    except (KeyError, TypeError):
        return None
    return str(after) if after not in (None, "") else None


def parse_owners(body: Any) -> list[Owner]:
    try:
        return [Owner(str(o["id"]), str(o.get("email") or ""), str(o.get("firstName") or ""),
                      str(o.get("lastName") or "")) for o in body["results"]]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"the owners are not in the expected shape: {exc!r}") from None


def parse_pipelines(body: Any) -> list[Pipeline]:
    try:
        return [Pipeline(str(p["id"]), str(p["label"]), int(p.get("displayOrder") or 0),
                         tuple(Stage(str(s["id"]), str(s["label"])) for s in p["stages"]
                               if not s.get("archived")))
                for p in body["results"] if not p.get("archived")]
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ConfigError(f"the pipelines are not in the expected shape: {exc!r}") from None
