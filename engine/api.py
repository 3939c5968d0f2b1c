"""The Python API: import, job and export runs as async functions with typed results.

Every run is an ``async`` function (it works inside a running event loop: ``await
engine.import_file(...)`` in Jupyter) with a ``*_sync`` twin for plain scripts, which
refuses to run inside a running loop::

    result = engine.import_file_sync("contacts.csv", "contacts",
                                     engine.ImportOptions(id_property="email"))
    result.state, result.counts.created, result.rejects_path

Results are frozen dataclasses (`RunResult` for imports and jobs, `ExportResult`). Errors
are the typed tree of `engine.errors`: `ConfigError` (fix the call), `FatalApiError` (fix
the token or its scopes), `Stopped` (run it again: it resumes). A run that stops before its
end (asked to, cancelled, or at the daily quota) raises `Stopped` with the partial result
attached (`exc.result`), so that an orchestrator's task fails and is retried; pass
``raise_on_stop=False`` to get the result back instead (``state == "stopped"``,
``resumable`` true). No exit code and no `SystemExit` come out of here.

No signal handler is installed unless asked (``handle_signals=True``: the first SIGINT or
SIGTERM stops politely, the second at once, as the CLI does). A cancellation by the host
(an anyio/asyncio task cancelled, e.g. Airflow's SIGTERM turned into task cancellation)
leaves the journal consistent: the same call again resumes with nothing lost or duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
import polars as pl

from engine import eventloop
from engine.associations import AssociationRule, parse_associate
from engine.client import HubSpotClient
from engine.collector import tuned_collector
from engine.config import (
    DEFAULT_CONCURRENCY,
    DEFAULT_RATE,
    DEFAULT_SEARCH_RATE,
    ClientSettings,
    Rate,
    Secret,
    load_token,
    resolve_base_url,
)
from engine.errors import ConfigError, EngineError, SourceError, Stopped, first_error
from engine.exports import ExportSpec, ExportSummary, run_export, write_export_summary
from engine.imports.delta import delta_mode
from engine.imports.drift import sample_size
from engine.imports.mirror import MaxArchive
from engine.imports.plan import IMPORT_KEY, ImportSpec
from engine.imports.runner import run_import, write_outputs
from engine.interrupt import PENDING, StopRequest, watch_signals
from engine.job import Job, import_job, job_files, load_job, run_request, write_reports
from engine.job import run_job as run_job_steps
from engine.journal import completed_run
from engine.mapping import MappingSpec
from engine.normalize import NormalizeOptions
from engine.outputs import refuse_inputs
from engine.report import Progress, Summary, write_summary
from engine.rerun import complete_message, import_request, job_request, stored_result
from engine.schema import canonical_object
from engine.source import FrameInput, SourceSpec

T = TypeVar("T")

class RunState(StrEnum):
    DONE = "done"
    DONE_WITH_REJECTS = "done_with_rejects"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Connection:
    """Where and how to reach HubSpot (or a sandbox).

    `base_url` None: ``$HUBSPOT_BASE_URL`` or https://api.hubapi.com. `token` None: read
    from `token_file` (mode 0600) or ``$HUBSPOT_ACCESS_TOKEN``. `rate`: requests per
    rolling window (``"190/10s"``; None: no client-side limit, for local servers).
    """

    base_url: str | None = None
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    rate: Rate | str | None = DEFAULT_RATE
    search_rate: Rate | str | None = DEFAULT_SEARCH_RATE
    concurrency: int = DEFAULT_CONCURRENCY
    daily_reserve: int = 0
    timeout_s: float = 60.0

    def client_settings(self) -> ClientSettings:
        token = Secret(self.token) if self.token is not None else load_token(self.token_file)
        return ClientSettings(
            resolve_base_url(self.base_url), token, rate=_rate(self.rate),
            search_rate=_rate(self.search_rate), concurrency=self.concurrency,
            read_timeout_s=self.timeout_s, daily_reserve=self.daily_reserve)


def _rate(value: Rate | str | None) -> Rate | None:
    return Rate.parse_option(value) if isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """How an input maps to properties and is written (the import command's flags).

    `map`: source column -> property; `values`: date order, time zone, empty cells...
    """

    mode: Literal["create", "update", "upsert", "archive"] = "upsert"
    """``"archive"``: archive the records the input names (by record id, or by
    `id_property`); other columns are ignored."""
    id_property: str | None = None
    map: Mapping[str, str] = field(default_factory=dict)
    mapping_file: Path | None = None
    strict_columns: bool = False
    ignore_unknown: bool = False
    values: NormalizeOptions = field(default_factory=NormalizeOptions)
    on_conflict: Literal["reject", "update"] = "reject"
    import_key: str = IMPORT_KEY
    delimiter: str = ","
    encoding_errors: Literal["strict", "replace"] = "strict"
    verify_sample: int = 0
    """With delta: read this many unchanged records back and repair those edited in HubSpot."""
    mirror: bool = False
    """With delta: archive the records (and associations) this state wrote that the input no
    longer holds, unless more than `max_archive` would go (then `ConfigError`, nothing
    archived)."""
    max_archive: str = "5%"
    """The mirror's guard: a number of records (``"500"``) or a share of the state's."""
    delta: bool | Literal["on", "full-rows", "refresh"] = False
    """Send only rows (and, unless ``"full-rows"``, only properties) that changed since the
    state last confirmed them; unchanged rows are counted ``unchanged``. ``"refresh"``
    re-sends everything and rebuilds the state. Needs upsert or update (a natural key)."""
    state: Path | None = None
    """The delta state (default beside the journal, by object, key property and portal)."""
    duplicates: Literal["reject", "first", "last"] = "reject"
    """Rows sharing a key: later ones rejected ``DUPLICATE_KEY`` (default), or only the
    first or the last sent and the others counted ``skipped``."""
    associate: Sequence[str] = ()
    """Links to records of another object, ``"OBJECT:KEY=COLUMN[:LABEL]"`` each (the CLI's
    ``--associate``): after the records are written, each row's record is linked to the
    record of OBJECT whose unique property KEY (``domain``, ``email``, a unique-value
    property or ``hs_object_id``) equals the row's COLUMN value, with LABEL if given. A row
    whose target does not exist is still written and listed in the rejects
    (``ASSOCIATION_TARGET_NOT_FOUND``)."""


@dataclass(frozen=True, slots=True)
class Counts:
    """Rows of a run; `rows_read == created + updated + unchanged + rejected + skipped`
    (+ `archived` in archive mode)."""

    rows_read: int = 0
    """Data rows of the input (blank rows left out), every run of the journal included."""
    rejected: int = 0
    """Rows in the rejects (refused locally or by HubSpot); data, never an exception."""
    created: int = 0
    """Records HubSpot created."""
    updated: int = 0
    """Records HubSpot updated (upserts of existing records included)."""
    unchanged: int = 0
    """Rows that needed no write."""
    changed: int = 0
    """Delta: rows sent because they differ from the state (counted in created/updated)."""
    new: int = 0
    """Delta: rows whose key the state did not hold (counted in created/updated)."""
    archived: int = 0
    """Archive mode: records archived; delta with mirror: records archived because the
    input no longer holds them."""
    skipped: int = 0
    """Duplicates first/last: rows skipped because another row of their key was sent."""
    drifted: int = 0
    """Delta with a verify sample: records edited in HubSpot since, re-sent."""
    associations: int = 0
    """Association edges written."""

    @classmethod
    def total(cls, steps: Sequence[StepResult]) -> Counts:
        return cls(**{name: sum(getattr(s.counts, name) for s in steps) for name in _COUNTS})


_COUNTS = ("rows_read", "created", "updated", "unchanged", "rejected", "associations",
           "changed", "new", "archived", "drifted", "skipped")


@dataclass(frozen=True, slots=True)
class StepResult:
    """One import step's account."""

    step: str
    object_type: str
    mode: str
    state: RunState
    counts: Counts
    api_calls: int
    http_429: int
    retries: int
    elapsed_s: float
    stop_reason: str | None = None
    resumed: bool = False
    notes: tuple[str, ...] = ()

    @classmethod
    def of(cls, summary: Summary) -> StepResult:
        state = (RunState.STOPPED if summary.state == "stopped" else
                 RunState.DONE_WITH_REJECTS if summary.rejected or summary.association_rejects
                 else RunState.DONE)
        return cls(summary.step, summary.object, summary.mode, state,
                   Counts(**{name: getattr(summary, name) for name in _COUNTS}), summary.api_calls,
                   summary.http_429, summary.retries, summary.elapsed_s, summary.stop_reason,
                   summary.resumed, tuple(summary.notes))


@dataclass(frozen=True, slots=True)
class RunResult:
    """An import's (one step) or a job's (every step, in order) account.

    `already_complete`: the same input had run to the end in this journal, so nothing
    was sent and this is its stored account (the message says when).
    """

    state: RunState
    counts: Counts
    steps: tuple[StepResult, ...]
    journal: Path
    results_path: Path | None = None
    rejects_path: Path | None = None
    summary_path: Path | None = None
    reports_dir: Path | None = None
    already_complete: str | None = None
    summaries: tuple[Summary, ...] = field(default=(), repr=False, compare=False)
    """Each step's account as the summary JSON and the CLI's table give it."""

    @property
    def resumable(self) -> bool:
        return self.state is RunState.STOPPED

    @property
    def stop_reason(self) -> str | None:
        return next((s.stop_reason for s in self.steps if s.stop_reason), None)

    def total(self, name: Literal["api_calls", "http_429", "retries", "elapsed_s"]) -> float:
        """A figure of every step summed: `result.total("http_429")`."""
        return float(sum(getattr(s, name) for s in self.steps))


@dataclass(frozen=True, slots=True)
class ExportResult:
    """An export's account: `records`/`edges` count every row in the output folder's part
    files of this object (resumed runs included); `manifest_path` is set once done."""

    state: RunState
    object_type: str
    out_dir: Path
    format: str
    records: int
    edges: Mapping[str, int]
    parts: int
    records_read: int
    api_calls: int
    search_calls: int
    http_429: int
    retries: int
    elapsed_s: float
    records_per_s: float
    manifest_path: Path | None
    summary_path: Path | None = None
    watermark: str | None = None
    resumed: bool = False
    notes: tuple[str, ...] = ()

    @property
    def resumable(self) -> bool:
        return self.state is RunState.STOPPED

    @classmethod
    def of(cls, summary: ExportSummary, summary_path: Path | None) -> ExportResult:
        done = summary.state == "done"
        out_dir = Path(summary.out_dir)
        return cls(RunState.DONE if done else RunState.STOPPED, summary.object, out_dir,
                   summary.format, summary.records, dict(summary.edges), summary.parts,
                   summary.records_read, summary.api_calls, summary.search_calls,
                   summary.http_429, summary.retries, summary.elapsed_s,
                   summary.records_per_s, out_dir / "_manifest.json" if done else None,
                   summary_path, summary.watermark, summary.resumed, tuple(summary.notes))


# -- running -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_client(connection: Connection | None) -> AsyncIterator[HubSpotClient]:
    async with HubSpotClient((connection or Connection()).client_settings()) as client:
        yield client


async def guarded(go: Callable[[StopRequest], Awaitable[T]], stop: StopRequest | None,
                   handle_signals: bool) -> T:
    """Run `go`, watching SIGINT/SIGTERM only if asked; task-group errors unwrapped."""
    stop = stop or StopRequest()
    try:
        if not handle_signals:
            return await go(stop)
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_signals, stop, PENDING)
            result = await go(stop)
            tg.cancel_scope.cancel()
        return result
    except BaseExceptionGroup as group:
        leaf = first_error(group)
        if leaf is None:
            raise
        raise leaf from None



def _state(code: int) -> RunState:
    return {0: RunState.DONE, 1: RunState.DONE_WITH_REJECTS}.get(code, RunState.STOPPED)


def _settled(result: T, state: RunState, reason: str | None, raise_on_stop: bool) -> T:
    if state is RunState.STOPPED and raise_on_stop:
        raise Stopped(f"stopped: {reason or 'interrupted'}; run it again to resume",
                      result=result)
    return result


def default_checkpoint(*parts: str) -> Path:
    """The journal a run uses when none is named: .hsbulk/NAME-DIGEST.db (from `parts`)."""
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]
    name = "-".join(p for p in parts[:1] if p) or "job"
    return Path(".hsbulk") / f"{re.sub(r'[^A-Za-z0-9._-]', '_', name)}-{digest}.db"


def file_checkpoint(spec: ImportSpec, base_url: str | None) -> Path:
    """The default journal of a file import: by object, mode, input path and base URL."""
    return default_checkpoint(str(spec.object_type), spec.mode,
                              str(Path(spec.source.path).resolve()), base_url or "")


def import_spec(object_type: str, source: SourceSpec, options: ImportOptions,
                concurrency: int = DEFAULT_CONCURRENCY) -> ImportSpec:
    """The importer's spec for one input and its options."""
    mapping = MappingSpec.from_flags([f"{k}={v}" for k, v in options.map.items()],
                                     options.mapping_file,
                                     strict_columns=options.strict_columns,
                                     ignore_unknown=options.ignore_unknown,
                                     reserved=frozenset(
                                         r.column for r in association_rules(options)))
    return ImportSpec(
        object_type=canonical_object(object_type), source=source, mode=options.mode,
        id_property=options.id_property, mapping=mapping, options=options.values,
        on_conflict=options.on_conflict, import_key=options.import_key,
        concurrency=concurrency, delta=delta_mode(options.delta), state=options.state,
        verify_sample=sample_size(options.verify_sample),
        mirror=options.mirror, max_archive=str(MaxArchive.parse(options.max_archive)),
        duplicates=options.duplicates)


def association_rules(options: ImportOptions) -> tuple[AssociationRule, ...]:
    """`ImportOptions.associate`, parsed (a ConfigError for a malformed one)."""
    texts = (options.associate,) if isinstance(options.associate, str) else options.associate
    if texts and options.mode == "archive":
        raise ConfigError("--associate does not apply to --mode archive")
    return tuple(parse_associate(text) for text in texts)


@dataclass(frozen=True, slots=True)
class _ImportRun:
    """One import as the API runs it: the spec, its journal and the files to write."""

    spec: ImportSpec
    journal: Path
    results: Path | None
    rejects: Path | None
    summary: Path | None
    restart: bool
    associations: tuple[AssociationRule, ...] = ()  # run as a one-step job (engine.job)

    def _job(self) -> Job:
        return import_job(self.spec, self.associations, self.journal)

    async def _send(self, client: HubSpotClient, progress: Progress | None,
                    stop: StopRequest) -> tuple[Summary, int]:
        if not self.associations:
            return await run_import(client, self.journal, self.spec, progress=progress,
                                    stop=stop, restart=self.restart)
        (summary, *_), code = await run_job_steps(client, self._job(), progress=progress,
                                                  stop=stop, restart=self.restart)
        return summary, code

    async def run(self, connection: Connection | None, progress: Progress | None,
                  stop: StopRequest) -> RunResult:
        request = run_request(self._job()) if self.associations else import_request(
            self.spec)
        done = None if self.restart or self.spec.delta else await anyio.to_thread.run_sync(
            completed_run, self.journal, request)
        if done is not None:  # the same input ran to the end: no call at all
            (summary,), code = stored_result(done)
            return self._finish(summary, code, complete_message(done, self.journal))
        try:
            with tuned_collector():  # millions of short-lived objects, few cycles
                async with open_client(connection) as client:
                    summary, code = await self._send(client, progress, stop)
        except SourceError:  # found mid-run: still account for what was written
            if self.journal.exists():
                with contextlib.suppress(EngineError, OSError):
                    self._write_files()
            raise
        return self._finish(summary, code, None)

    def _write_files(self) -> None:
        write_outputs(self.journal, self.spec, results=self.results, rejects=self.rejects)

    def _finish(self, summary: Summary, code: int, complete: str | None) -> RunResult:
        self._write_files()
        if self.summary is not None:
            write_summary(self.summary, [summary])
        step = StepResult.of(summary)
        return RunResult(_state(code), step.counts, (step,), self.journal, self.results,
                         self.rejects, self.summary, None, complete, (summary,))


async def _run_import(run: _ImportRun, read: Sequence[Path | str | None], *,
                      connection: Connection | None, progress: Progress | None,
                      stop: StopRequest | None, handle_signals: bool,
                      raise_on_stop: bool) -> RunResult:
    token_file = connection.token_file if connection else None
    refuse_inputs([run.results, run.rejects, run.summary], [*read, run.journal, token_file])
    result = await guarded(partial(run.run, connection, progress), stop, handle_signals)
    return _settled(result, result.state, result.stop_reason, raise_on_stop)


async def import_file(source: str | Path, object_type: str,
                      options: ImportOptions | None = None, *,
                      connection: Connection | None = None, checkpoint: Path | None = None,
                      results: Path | None = None, rejects: Path | None = None,
                      summary: Path | None = None, restart: bool = False,
                      progress: Progress | None = None, stop: StopRequest | None = None,
                      handle_signals: bool = False, raise_on_stop: bool = True) -> RunResult:
    """Import a CSV/Parquet/NDJSON file (or a glob of them) into one object type.

    `checkpoint`: the journal (default under .hsbulk/, named from the object, the mode,
    the input's path and the base URL: the same call resumes). `results`/`rejects`/
    `summary`: files to write (CSV or Parquet by extension; JSON). `restart`: a new run even
    if the journal holds an unfinished or finished one of this input.
    """
    options = options or ImportOptions()
    conn = connection or Connection()
    spec = import_spec(object_type, SourceSpec(
        str(source), delimiter=options.delimiter, encoding_errors=options.encoding_errors),
        options, conn.concurrency)
    journal = checkpoint or file_checkpoint(spec, conn.base_url)
    run = _ImportRun(spec, journal, results, rejects, summary, restart,
                     association_rules(options))
    return await _run_import(run, [str(source), options.mapping_file], connection=conn,
                             progress=progress, stop=stop, handle_signals=handle_signals,
                             raise_on_stop=raise_on_stop)


async def import_frame(frame: pl.DataFrame | pl.LazyFrame, object_type: str,
                       options: ImportOptions | None = None, *, run_key: str,
                       connection: Connection | None = None, checkpoint: Path | None = None,
                       results: Path | None = None, rejects: Path | None = None,
                       summary: Path | None = None, restart: bool = False,
                       progress: Progress | None = None, stop: StopRequest | None = None,
                       handle_signals: bool = False, raise_on_stop: bool = True) -> RunResult:
    """Import a polars DataFrame or LazyFrame (every column sent as text, `source_row` the
    1-based row) into one object type.

    `run_key` names the run: the default journal is .hsbulk/frame-RUN_KEY-*.db, and the
    frame's content hash is its input fingerprint, so the same key and the same content
    resume an unfinished run, and a changed frame under an unfinished run's key is refused
    (`CheckpointError`; `restart=True` abandons the old run). A LazyFrame is read in slices
    several times (hash, import, rejects): it must give the same rows each time.
    """
    if not run_key.strip():
        raise ConfigError("run_key must name the run (it identifies its journal)")
    options = options or ImportOptions()
    conn = connection or Connection()
    name = f"frame:{run_key}"
    spec = import_spec(object_type, SourceSpec(name, frame=FrameInput(frame, name)), options,
                       conn.concurrency)
    journal = checkpoint or default_checkpoint("frame", run_key, str(spec.object_type),
                                               spec.mode, conn.base_url or "")
    run = _ImportRun(spec, journal, results, rejects, summary, restart,
                     association_rules(options))
    return await _run_import(run, [options.mapping_file], connection=conn,
                             progress=progress, stop=stop, handle_signals=handle_signals,
                             raise_on_stop=raise_on_stop)


async def run_job(job: Job | str | Path, *, connection: Connection | None = None,
                  checkpoint: Path | None = None, reports: Path | None = None,
                  summary: Path | None = None, restart: bool = False,
                  progress: Progress | None = None, stop: StopRequest | None = None,
                  handle_signals: bool = False, raise_on_stop: bool = True) -> RunResult:
    """Run a multi-step job: a TOML job file's path, or a `Job` (`load_job(path)`, changed
    with `dataclasses.replace` as needed). Steps run in dependency order, journaled as one
    job (`checkpoint` overrides the job's). `reports`: per-step results/rejects files."""
    loaded = job if isinstance(job, Job) else load_job(Path(job))
    if checkpoint is not None:
        loaded = replace(loaded, checkpoint=checkpoint)
    folder = reports or loaded.reports
    written, read = job_files(loaded, folder)
    refuse_inputs([summary, *written],
                  [*read, connection.token_file if connection else None])

    async def go(stop: StopRequest) -> RunResult:
        done = None if restart or loaded.has_delta else await anyio.to_thread.run_sync(
            completed_run, loaded.checkpoint, job_request(loaded))
        if done is None:
            with tuned_collector():
                async with open_client(connection) as client:
                    summaries, code = await run_job_steps(client, loaded, progress=progress,
                                                          stop=stop, restart=restart)
        else:
            summaries, code = stored_result(done)
        if folder is not None:
            write_reports(loaded, folder)
        if summary is not None:
            write_summary(summary, summaries, job=loaded.name, exit_code=code)
        steps = tuple(StepResult.of(s) for s in summaries)
        return RunResult(_state(code), Counts.total(steps), steps, loaded.checkpoint,
                         summary_path=summary, reports_dir=folder,
                         already_complete=complete_message(done, loaded.checkpoint)
                         if done is not None else None, summaries=tuple(summaries))

    result = await guarded(go, stop, handle_signals)
    return _settled(result, result.state, result.stop_reason, raise_on_stop)


async def export_objects(object_type: str, out_dir: Path, *,
                         format: Literal["parquet", "csv"] = "parquet",
                         properties: Sequence[str] | None = None,
                         associations: Sequence[str] = (), since: datetime | None = None,
                         lookback: timedelta = timedelta(0), archived: bool = False,
                         partitions: int = 4, rows_per_part: int = 50_000,
                         escape_formulas: bool = True, connection: Connection | None = None,
                         checkpoint: Path | None = None, summary: Path | None = None,
                         progress: Progress | None = None, stop: StopRequest | None = None,
                         handle_signals: bool = False,
                         raise_on_stop: bool = True) -> ExportResult:
    """Export one object type (`properties` None: all) and its association edges into
    OUT_DIR/TYPE/part-*.{parquet,csv}; resumable, written atomically. `since`: only
    records modified since then (minus `lookback`), read by search."""
    spec = ExportSpec(
        object_type=str(canonical_object(object_type)), out_dir=Path(out_dir), format=format,
        properties=tuple(properties) if properties is not None else None,
        associations=tuple(str(canonical_object(a)) for a in associations), since=since,
        lookback=lookback, archived=archived, partitions=partitions,
        escape_formulas=escape_formulas, checkpoint=checkpoint, rows_per_part=rows_per_part)
    refuse_inputs([summary], [spec.checkpoint_path,
                              connection.token_file if connection else None])

    async def go(stop: StopRequest) -> ExportResult:
        async with open_client(connection) as client:
            done = await run_export(client, spec, progress=progress, stop=stop)
        if summary is not None:
            write_export_summary(summary, done)
        return ExportResult.of(done, summary)

    result = await guarded(go, stop, handle_signals)
    return _settled(result, result.state, "; ".join(result.notes) or None, raise_on_stop)


# -- plain scripts -----------------------------------------------------------------------


def _blocking(func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return eventloop.run(partial(func, *args, **kwargs))
    name = getattr(func, "__name__", "the run")
    raise ConfigError(f"{name}_sync was called inside a running event loop: "
                      f"use `await engine.{name}(...)` there")


def import_file_sync(*args: Any, **kwargs: Any) -> RunResult:
    """`import_file` for plain scripts (no event loop running)."""
    return _blocking(import_file, *args, **kwargs)


def import_frame_sync(*args: Any, **kwargs: Any) -> RunResult:
    """`import_frame` for plain scripts (no event loop running)."""
    return _blocking(import_frame, *args, **kwargs)


def run_job_sync(*args: Any, **kwargs: Any) -> RunResult:
    """`run_job` for plain scripts (no event loop running)."""
    return _blocking(run_job, *args, **kwargs)


def export_objects_sync(*args: Any, **kwargs: Any) -> ExportResult:
    """`export_objects` for plain scripts (no event loop running)."""
    return _blocking(export_objects, *args, **kwargs)


# -- the sandbox, for users' own tests -----------------------------------------------------


@contextlib.asynccontextmanager
async def start_sandbox(*, rate: str | None = None, search_rate_per_s: float | None = None,
                        daily_limit: int | None = None, latency_ms: float = 0.0,
                        seed: int = 0, lean: bool = False) -> AsyncIterator[Any]:
    """A HubSpot-compatible sandbox on a free loopback port, in this event loop::

        async with engine.start_sandbox() as sandbox:
            conn = engine.Connection(sandbox.base_url, sandbox.token, rate=None)

    `rate` (``"190/10s"``; None: unlimited) is the server's window. The sandbox object
    also offers `records(type)`, `edges(from, to)` and `audit()`.
    """
    from engine.sandbox import SandboxSettings, running_sandbox

    window = Rate.parse(rate) if rate is not None else None
    settings = SandboxSettings(
        rate_requests=window.requests if window else None,
        rate_window_s=window.window_s if window else 10.0,
        search_rate_per_s=search_rate_per_s, daily_limit=daily_limit, latency_ms=latency_ms,
        seed=seed, lean=lean)
    async with running_sandbox(settings) as sandbox:
        yield sandbox
