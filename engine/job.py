"""Job files (`hsbulk run JOB.toml`): several import steps and their associations.

The file is read strictly: unknown keys are errors (a typo must not silently drop an
option), sources resolve relative to the job file, and steps are ordered so that every
association target is written before the step that points at it (a cycle is an error).
"""

from __future__ import annotations

import graphlib
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import anyio

from engine.associations import (
    AssociationRule,
    EdgeDelta,
    check_target_keys,
    inline_association,
    write_associations,
)
from engine.client import HubSpotClient
from engine.config import load_toml
from engine.errors import ApiError, ConfigError, QuotaExhausted, RetryableApiError, TransportError
from engine.imports.delta import DeltaSession, delta_mode
from engine.imports.drift import sample_size
from engine.imports.mirror import MaxArchive
from engine.imports.plan import (
    DUPLICATES,
    GROUPS,
    IMPORT_KEY,
    MODES,
    ImportSpec,
    InlineAssociation,
)
from engine.imports.runner import StepRunner, state_path_of, write_outputs
from engine.interrupt import StopRequest
from engine.journal import DeltaStore, JournalThread, RunRequest, SqliteCheckpoint
from engine.mapping import MappingSpec
from engine.normalize import NormalizeOptions
from engine.report import REJECTS_FILE_SCHEMA, Progress, Summary, frame_of, write_frame
from engine.rerun import import_request, job_request, stored_result
from engine.schema import ObjectType, canonical_object, fetch_schema
from engine.source import SourceSpec, open_source

log = logging.getLogger("hsbulk.job")

JOB_KEYS = {"name", "checkpoint", "reports"}
STEP_KEYS = {"name", "object", "source", "mode", "id_property", "map", "mapping", "options",
             "properties", "associations"} | {"verify_sample", "mirror", "max_archive"} | {
                 "delta", "state"} | {"duplicates"}
OPTION_KEYS = {"date_order", "timezone", "dates", "empty", "on_invalid", "checkbox",
               "separators", "thousands", "decimal", "delimiter", "encoding_errors",
               "on_conflict", "import_key", "strict_columns", "ignore_unknown", "auto_map"}
NORMALIZE_KEYS = {"date_order", "timezone", "dates", "empty", "on_invalid", "checkbox",
                  "separators", "thousands", "decimal"}
PROPERTY_KEYS = {"name", "label", "type", "field_type", "options", "unique", "group",
                 "description"}
ASSOCIATION_KEYS = {"to", "object", "column", "key", "label", "type_id", "create_label",
                    "inverse_label"}


@dataclass(frozen=True, slots=True)
class PropertyToCreate:
    """`[[steps.properties]]`: created on the step's object before it runs, if missing."""

    name: str
    label: str
    type: str
    field_type: str
    options: tuple[tuple[str, str], ...] = ()
    unique: bool = False
    group: str | None = None
    description: str = ""

    def body(self, default_group: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name, "label": self.label, "type": self.type,
            "fieldType": self.field_type, "groupName": self.group or default_group,
            "description": self.description, "hasUniqueValue": self.unique,
        }
        if self.options:
            body["options"] = [{"label": label, "value": value, "displayOrder": i}
                               for i, (label, value) in enumerate(self.options)]
        return body


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    spec: ImportSpec
    properties: tuple[PropertyToCreate, ...] = ()
    associations: tuple[AssociationRule, ...] = ()


@dataclass(frozen=True, slots=True)
class Job:
    """A job file, read and checked: its steps in the order they run (every association
    target before the steps that point at it), its journal and its reports folder."""

    name: str
    path: Path
    checkpoint: Path
    steps: tuple[Step, ...]
    reports: Path | None = None
    command: Literal["run", "import"] = "run"  # import: `hsbulk import --associate`

    def is_target(self, step: str) -> bool:
        """Another step links to this step's records (by name, or by object: existing
        records of its object), so its keys and ids are kept in the journal."""
        obj = next(s.spec.object_type.type_id for s in self.steps if s.name == step)
        return any(rule.to_step == step or (rule.to_step is None
                                            and rule.to_object.type_id == obj)
                   for s in self.steps for rule in s.associations if s.name != step)

    @property
    def has_delta(self) -> bool:
        """A step loads with `delta`: the job runs every time (never "already complete")."""
        return any(s.spec.delta is not None for s in self.steps)


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: "
                          f"{', '.join(sorted(allowed))}")


def _table(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table")
    return value


def _tables(value: Any, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{where} must be an array of tables ([[{where}]])")
    return value


def _text(table: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: `{key}` must be a non-empty string")
    return value.strip()


def load_job(path: Path) -> Job:
    data = load_toml(path, "job file")
    _check_keys(data, {"job", "steps"}, str(path))
    job = _table(data.get("job"), "[job]")
    _check_keys(job, JOB_KEYS, "[job]")
    name = _text(job, "name", "[job]", path.stem)
    base = path.parent
    raw_steps = _tables(data.get("steps"), "steps")
    if not raw_steps:
        raise ConfigError(f"job file {path} has no [[steps]]")
    names = [_text(s, "name", f"step {i + 1}") for i, s in enumerate(raw_steps)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"step names must be unique: {', '.join(duplicates)}")
    objects = {n: canonical_object(_text(s, "object", f"step {n!r}"))
               for n, s in zip(names, raw_steps, strict=True)}
    steps = {n: _step(s, n, base, objects) for n, s in zip(names, raw_steps, strict=True)}
    graph = {n: _targets(step, steps) for n, step in steps.items()}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise ConfigError(f"steps associate in a cycle ({' -> '.join(exc.args[1])}): "
                          "split one association into a later step") from None
    position = {n: i for i, n in enumerate(names)}
    order.sort(key=lambda n: (_depth(n, graph), position[n]))
    checkpoint = Path(job["checkpoint"]) if "checkpoint" in job else Path(
        ".hsbulk") / f"{name}.db"
    if not checkpoint.is_absolute():
        checkpoint = base / checkpoint
    reports = Path(job["reports"]) if "reports" in job else None
    if reports is not None and not reports.is_absolute():
        reports = base / reports
    return Job(name, path, checkpoint, tuple(steps[n] for n in order), reports)


def _targets(step: Step, steps: Mapping[str, Step]) -> set[str]:
    """The steps `step` links to: by name (`to`), and every other step writing the object
    of a link to existing records (`object`), so that their records are there first."""
    out: set[str] = set()
    for rule in step.associations:
        if rule.to_step is not None:
            out.add(rule.to_step)
        else:
            out.update(n for n, s in steps.items() if n != step.name
                       and s.spec.object_type.type_id == rule.to_object.type_id)
    return out


def _depth(name: str, graph: Mapping[str, set[str]]) -> int:
    targets = graph.get(name, set())
    return 1 + max((_depth(t, graph) for t in targets), default=-1)


def _step(raw: dict[str, Any], name: str, base: Path, objects: Mapping[str, Any]) -> Step:
    where = f"step {name!r}"
    _check_keys(raw, STEP_KEYS, where)
    options = _table(raw.get("options"), f"{where} options")
    _check_keys(options, OPTION_KEYS, f"{where} options")
    source = Path(_text(raw, "source", where))
    if not source.is_absolute():
        source = base / source
    rules = tuple(_association(a, where, objects)
                  for a in _tables(raw.get("associations"), "steps.associations"))
    mapping_file = raw.get("mapping")
    maps = _table(raw.get("map"), f"{where} map")
    mapping = MappingSpec(
        pairs=tuple((str(k), str(v)) for k, v in maps.items()),
        file=(base / mapping_file) if isinstance(mapping_file, str) else None,
        auto=bool(options.get("auto_map", True)),
        reserved=frozenset(rule.column for rule in rules),
        strict_columns=bool(options.get("strict_columns", False)),
        ignore_unknown=bool(options.get("ignore_unknown", False)),
    )
    try:
        normalize = NormalizeOptions(**{k: v for k, v in options.items() if k in NORMALIZE_KEYS})
    except TypeError as exc:
        raise ConfigError(f"{where} options: {exc}") from None
    mode = str(raw.get("mode", "upsert"))
    if mode not in MODES:
        raise ConfigError(f"{where}: mode must be {', '.join(MODES)}, not {mode!r}")
    duplicates = str(raw.get("duplicates", "reject"))
    if duplicates not in DUPLICATES:
        raise ConfigError(f"{where}: duplicates must be {', '.join(DUPLICATES)}, "
                          f"not {duplicates!r}")
    spec = ImportSpec(
        object_type=objects[name],
        source=SourceSpec(str(source), delimiter=str(options.get("delimiter", ",")),
                          encoding_errors=options.get("encoding_errors", "strict")),
        mode=mode,
        id_property=raw.get("id_property"),
        mapping=mapping, options=normalize,
        on_conflict=options.get("on_conflict", "reject"),
        import_key=str(options.get("import_key", IMPORT_KEY)),
        step=name, duplicates=duplicates,
        **_after_pass(raw, where),
        **_delta(raw, where, base),
    )
    properties = tuple(_property(p, where) for p in _tables(raw.get("properties"),
                                                            "steps.properties"))
    return Step(name, spec, properties, rules)


def _delta(raw: dict[str, Any], where: str, base: Path) -> dict[str, Any]:
    """`delta = true | "full-rows" | "refresh"`, `state = "path"` (relative to the job)."""
    try:
        mode = delta_mode(raw.get("delta"))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    state = raw.get("state")
    if state is not None and not isinstance(state, str):
        raise ConfigError(f"{where}: state must be a path")
    return {"delta": mode, "state": None if state is None else base / state}


def _after_pass(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """`verify_sample = N`, `mirror = true`, `max_archive = "5%"` (delta steps)."""
    mirror = raw.get("mirror", False)
    if not isinstance(mirror, bool):
        raise ConfigError(f"{where}: mirror must be true or false")
    try:
        return {"verify_sample": sample_size(raw.get("verify_sample", 0)), "mirror": mirror,
                "max_archive": str(MaxArchive.parse(raw.get("max_archive", "5%")))}
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _property(raw: dict[str, Any], where: str) -> PropertyToCreate:
    _check_keys(raw, PROPERTY_KEYS, f"{where} properties")
    options = raw.get("options") or []
    pairs: list[tuple[str, str]] = []
    for option in options:
        if isinstance(option, str):
            pairs.append((option, option))
        elif isinstance(option, dict) and "label" in option:
            pairs.append((str(option["label"]), str(option.get("value", option["label"]))))
        else:
            raise ConfigError(f"{where} properties: options are strings or "
                              "{label, value} tables")
    return PropertyToCreate(
        name=_text(raw, "name", f"{where} properties"),
        label=_text(raw, "label", f"{where} properties", raw.get("name")),
        type=_text(raw, "type", f"{where} properties", "string"),
        field_type=_text(raw, "field_type", f"{where} properties", "text"),
        options=tuple(pairs), unique=bool(raw.get("unique", False)),
        group=raw.get("group"), description=str(raw.get("description", "")),
    )


def _association(raw: dict[str, Any], where: str,
                 objects: Mapping[str, Any]) -> AssociationRule:
    _check_keys(raw, ASSOCIATION_KEYS, f"{where} associations")
    to_step, to_object = _association_target(raw, where, objects)
    type_id = raw.get("type_id")
    if type_id is not None and not isinstance(type_id, int):
        raise ConfigError(f"{where} associations: type_id must be a whole number")
    return AssociationRule(
        to_step=to_step, to_object=to_object,
        column=_text(raw, "column", f"{where} associations"),
        key=_text(raw, "key", f"{where} associations"), label=raw.get("label"),
        type_id=type_id, create_label=bool(raw.get("create_label", False)),
        inverse_label=raw.get("inverse_label"),
    )


def _association_target(raw: dict[str, Any], where: str,
                        objects: Mapping[str, Any]) -> tuple[str | None, ObjectType]:
    """`to = "step"` (that step's records) or `object = "companies"` (records of that
    object already in HubSpot, or written by an earlier step of the job): exactly one."""
    if ("to" in raw) == ("object" in raw):
        raise ConfigError(f"{where} associations: give either `to` (a step of this job) or "
                          "`object` (existing records of that object type), not "
                          f"{'both' if 'to' in raw else 'neither'}")
    if "object" in raw:
        return None, canonical_object(_text(raw, "object", f"{where} associations"))
    to = _text(raw, "to", f"{where} associations")
    if to not in objects:
        raise ConfigError(f"{where} associations: `to = {to!r}` names no step; steps: "
                          f"{', '.join(objects)}")
    return to, objects[to]


async def ensure_properties(client: HubSpotClient, step: Step) -> list[str]:
    """Create the step's declared properties that the portal does not have yet."""
    if not step.properties:
        return []
    obj = step.spec.object_type
    schema = await fetch_schema(client, obj)
    created = []
    for prop in step.properties:
        if prop.name in schema:
            continue
        group = GROUPS.get(obj.name or "", f"{obj.name or 'object'}information")
        try:
            await client.post_json(f"/crm/v3/properties/{obj.path_name}", prop.body(group))
        except ApiError as exc:
            if exc.status != 409:
                raise
        created.append(f"created property {prop.name!r} on {obj}")
        log.info("%s", created[-1])
    return created


async def run_job(client: HubSpotClient, job: Job, *, progress: Progress | None = None,
                  stop: StopRequest | None = None,
                  restart: bool = False) -> tuple[list[Summary], int]:
    """Run every step in order, each followed by its associations; resumable as a whole.

    `stop`: asked to stop, the running step finishes what is in flight and the job
    returns with code 4 (resumable). A job that finished with these inputs and this job
    file sends nothing and returns its stored summaries and code; `restart` runs it anew
    (an unfinished run is abandoned and kept readable)."""
    stop = stop or StopRequest()
    request = await anyio.to_thread.run_sync(run_request, job)
    checkpoint = SqliteCheckpoint(job.checkpoint)
    thread = JournalThread()  # every journal call of the job, off the event loop
    summaries: list[Summary] = []
    code = 0
    try:
        finished = await thread.call(partial(checkpoint.begin_run, restart=restart),
                                      request)
        if finished is not None and job.has_delta:  # delta steps diff every night anew
            finished = await thread.call(partial(checkpoint.begin_run, restart=True),
                                         request)
        if finished is not None:
            return stored_result(finished)
        for step in job.steps:
            calls_before = client.stats.api_calls
            notes = await ensure_properties(client, step)
            await check_target_keys(client, step.associations)  # before any write
            spec = replace(step.spec, record_ids=job.is_target(step.name))
            inline = []
            if spec.mode == "create":  # targets exist already: associate inside the creates
                for rule in step.associations:
                    kind, ids = await inline_association(
                        client, checkpoint, spec.object_type, open_source(spec.source), rule,
                        thread=thread)
                    inline.append(InlineAssociation(rule.column, kind.category, kind.type_id,
                                                    ids))
            links = _StepAssociations(client=client, checkpoint=checkpoint, thread=thread,
                                      job=job, step=step, spec=spec, inline=bool(inline),
                                      stop=stop)
            if job.command == "import":  # one rejects file: misses are listed there too
                links.report_under = step.name
            in_pass = spec.delta is not None and bool(step.associations)
            runner = StepRunner(client, checkpoint, spec, progress=progress, inline=inline,
                                stop=stop, thread=thread,
                                associate=links.write_delta if in_pass else None)
            summary = await runner.run()
            summary.notes[:0] = notes
            summary.api_calls = client.stats.api_calls - calls_before  # + preparation
            summaries.append(summary)
            if not in_pass and not runner.state.stop_code:
                reason = await links.write()
                summary.api_calls += links.calls
                if reason is not None:
                    summary.state, summary.stop_reason = "stopped", reason
            summary.associations += links.edges
            summary.association_rejects += links.rejected_rows
            summary.association_calls = links.calls
            if runner.state.stop_code or summary.state == "stopped":
                return summaries, runner.state.stop_code or 4
            code = max(code, 1 if summary.rejected or summary.association_rejects else 0)
        await thread.call(checkpoint.finish_run, [s.as_dict() for s in summaries], code)
    finally:
        checkpoint.close()
    return summaries, code


@dataclass(slots=True, kw_only=True)
class _StepAssociations:
    """A step's association rules, written after its records: by `run_job` after the
    step, or (delta) by the step's runner while its state is open, before the mirror."""

    client: HubSpotClient
    calls: int = 0  # association calls made
    checkpoint: SqliteCheckpoint
    thread: JournalThread
    edges: int = 0  # edges written
    job: Job
    step: Step
    rejected_rows: int = 0  # rows whose target was not found
    spec: ImportSpec
    inline: bool  # the step's creates carried the associations already
    stop: StopRequest
    report_under: str | None = None  # also journal target misses as the step's rejects

    async def write(self, delta: EdgeDelta | None = None,
                    states: Mapping[tuple[str, str], DeltaStore] | None = None) -> str | None:
        """Every rule in turn; the stop reason when stopped (resumable), else None."""
        before = self.client.stats.api_calls
        try:
            for rule in self.step.associations:
                with self.stop.hard_scope():
                    outcome = await write_associations(
                        self.client, self.checkpoint, step=self.step.name,
                        obj=self.spec.object_type, source=open_source(self.spec.source),
                        rule=rule, inline=self.inline, stop=self.stop, thread=self.thread,
                        delta=delta, states=states, report_under=self.report_under)
                if self.stop.requested:
                    return self.stop.reason or "interrupted"
                self.edges += outcome.edges
                self.rejected_rows += outcome.rejected_rows
        except (QuotaExhausted, RetryableApiError, TransportError) as exc:
            return str(exc)
        finally:
            self.calls += self.client.stats.api_calls - before
        return None

    async def write_delta(self, session: DeltaSession, key_column: str | None) -> str | None:
        """Delta: only edges new since the state's last confirmed write are sent; target
        ids come from the target steps' delta states first (no read for a known key)."""
        if key_column is None:
            raise ConfigError(f"step {self.step.name!r}: delta associations need the "
                              "natural key as an input column")
        states = await self._target_states(session.store.path)
        try:
            return await self.write(EdgeDelta(session.store, session.run_id, key_column,
                                              resend=session.mode == "refresh"), states)
        finally:
            for store in states.values():
                await self.thread.call(store.close)

    async def _target_states(self, own: Path) -> dict[tuple[str, str], DeltaStore]:
        """The delta states of the steps this one points at (not its own, open already)."""
        states: dict[tuple[str, str], DeltaStore] = {}
        for rule in self.step.associations:
            for target in self._target_specs(rule):
                if (target.delta is None
                        or (target.id_property or "").lower() != rule.key.lower()):
                    continue
                path = state_path_of(target, self.checkpoint.path,
                                     self.client.settings.base_url)
                if (path != own and path.exists()
                        and (target.object_name, rule.key.lower()) not in states):
                    states[(target.object_name, rule.key.lower())] = await self.thread.call(
                        DeltaStore, path)
        return states

    def _target_specs(self, rule: AssociationRule) -> list[ImportSpec]:
        """The steps whose records `rule` may link to: its `to` step, else (existing
        records) every other step of the job writing its object."""
        return [s.spec for s in self.job.steps if s.name == rule.to_step or (
            rule.to_step is None and s.name != self.step.name
            and s.spec.object_type.type_id == rule.to_object.type_id)]


def import_job(spec: ImportSpec, rules: tuple[AssociationRule, ...], checkpoint: Path) -> Job:
    """`hsbulk import --associate`: the import as a one-step job, so that its links are
    written, journaled and resumed as a job step's are."""
    return Job(spec.step, Path(spec.source.path), checkpoint, (Step(spec.step, spec, (), rules),),
               command="import")


def run_request(job: Job) -> RunRequest:
    """What identifies the run in its journal: an import's request (its links included)
    for an import, else the job's."""
    if job.command != "import":
        return job_request(job)
    (step,) = job.steps
    request = import_request(step.spec)
    digest = hashlib.sha256(f"{request.spec_hash}:{step.associations!r}".encode())
    return replace(request, spec_hash=digest.hexdigest()[:32])


def report_paths(job: Job, folder: Path) -> dict[str, tuple[Path, Path, Path]]:
    """Per step: its results, rejects and association rejects files in `folder`."""
    return {step.name: (folder / f"{step.name}.results.csv",
                        folder / f"{step.name}.rejects.csv",
                        folder / f"{step.name}.association_rejects.csv")
            for step in job.steps}


def job_files(job: Job, reports: Path | None) -> tuple[list[Path], list[Path | str]]:
    """(the report files the job writes into `reports`, every file it reads: the job file,
    its journal, each step's source and mapping file), for `outputs.refuse_inputs`."""
    written = [path for paths in report_paths(job, reports).values() for path in paths
               ] if reports is not None else []
    read: list[Path | str] = [job.path, job.checkpoint,
                              *(step.spec.source.path for step in job.steps),
                              *(step.spec.mapping.file for step in job.steps
                                if step.spec.mapping.file is not None)]
    return written, read


def write_reports(job: Job, folder: Path) -> None:
    """Per step: results, rejects, and association rejects files (CSV, `engine.outputs`)."""
    paths = report_paths(job, folder)
    for step in job.steps:
        results, rejects, association_rejects = paths[step.name]
        write_outputs(job.checkpoint, step.spec, results=results, rejects=rejects)
        checkpoint = SqliteCheckpoint(job.checkpoint)
        try:
            rows = [row for rule in step.associations
                    for chunk in checkpoint.iter_rejects(rule.step_key(step.name))
                    for row in chunk]
        finally:
            checkpoint.close()
        if rows:
            write_frame(association_rejects, frame_of([rows], REJECTS_FILE_SCHEMA))
