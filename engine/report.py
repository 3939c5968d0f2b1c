"""What a run tells its user: results and rejects files, the summary JSON, progress.

Files are CSV or Parquet by extension, written by `engine.outputs` (atomic, 0600, `-` is
stdout, CSV formulas escaped). Progress is a live rich bar on a terminal and a plain log
line every few seconds otherwise.

File contracts:

* results: `source_row`, the natural key, `id`, `action`. The key column is named after
  the property that identifies records in the journal (`email` for `--id-property email`,
  `hs_object_id` for updates by record id, the import key property for creates without
  `--id-property`), or `key` where that name would clash with another column. Actions:
  `created`, `updated`, `unchanged`, `archived` (`--mode archive`), and `skipped` for a
  row another row of its key stood for (`--duplicates first|last`; its `id` is the record
  that row wrote). A skipped row is not in the rejects file.
* rejects: `hsbulk_source_row`, `hsbulk_column`, `hsbulk_value`, `hsbulk_code`,
  `hsbulk_message`, then the rejected row's original columns, so that a fixed rejects file
  imports again with the same command (`hsbulk_*` columns are never mapped to properties,
  and the `hsbulk_*` columns of an input that was itself a rejects file are replaced).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import polars as pl
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress
from rich.table import Table

from engine.journal import DecodedResults, ResultsChunk, TextResults
from engine.mapping import is_reserved
from engine.normalize import REJECT_SCHEMA
from engine.outputs import write_frame as write_frame
from engine.outputs import write_json
from engine.source import SOURCE_ROW

log = logging.getLogger("hsbulk")

RESULT_SCHEMA = {SOURCE_ROW: pl.Int64(), "id": pl.String(), "action": pl.String()}
# A reject as the journal and normalize hold it, and the column each becomes in a file.
REJECT_FIELDS: dict[str, pl.DataType] = dict(REJECT_SCHEMA)
REJECT_COLUMNS = {name: f"hsbulk_{name}" for name in REJECT_FIELDS}
REJECTS_FILE_SCHEMA: dict[str, pl.DataType] = {REJECT_COLUMNS[name]: dtype
                                               for name, dtype in REJECT_FIELDS.items()}


def results_frame(chunks: Iterable[ResultsChunk], key_property: str) -> pl.DataFrame:
    """The journal's results (`SqliteCheckpoint.iter_keyed_results`) -> the results file's
    frame (see the docstring), each batch's rows sorted by source row (then key, id,
    action). Polars splits the journal's text: a Python object per value costs several
    times as much."""
    key = key_property if key_property not in RESULT_SCHEMA else "key"
    schema: dict[str, pl.DataType] = {SOURCE_ROW: pl.Int64(), key: pl.String(),
                                      "id": pl.String(), "action": pl.String()}
    frames = [_results_chunk(chunk, schema) for chunk in chunks]
    return pl.concat(frames) if frames else pl.DataFrame(schema=schema)


_BATCH = "__batch"  # a row's batch, by its ordinal in the chunk


def _results_chunk(chunk: ResultsChunk, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    text = _text_results(chunk.text, schema)
    if not chunk.decoded.rows and _is_increasing(text.get_column(SOURCE_ROW)):
        return text  # the usual chunk: every batch answered whole and in order
    text_batches = pl.DataFrame({_BATCH: chunk.text.batches, "n": chunk.text.counts},
                                schema={_BATCH: pl.Int64, "n": pl.UInt32})
    batches = text_batches.select(pl.col(_BATCH).repeat_by("n").explode())
    decoded = _decoded_results(chunk.decoded, schema)
    return (pl.concat([pl.concat([batches, text], how="horizontal"), decoded])
            .sort(_BATCH, *schema).drop(_BATCH))


def _is_increasing(rows: pl.Series) -> bool:
    return rows.len() < 2 or bool((rows.diff(null_behavior="drop") > 0).all())


def _text_results(text: TextResults, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Split each batch's text (see `TextResults`) into its values, a column at a time."""
    names = list(schema)  # source_row, then the key, id and action strings
    blobs = pl.DataFrame([pl.Series(name, column, dtype=pl.Binary) for name, column in zip(
        names, (text.rows, text.keys, text.ids, text.actions), strict=True)])
    return blobs.lazy().select(  # in one query: polars splits the columns side by side
        pl.col(names[0]).cast(pl.String).str.split(",").list.explode().cast(pl.Int64),
        pl.col(names[1:]).cast(pl.String).str.split('","').list.explode()).collect()


def _decoded_results(decoded: DecodedResults, schema: dict[str, pl.DataType]
                     ) -> pl.DataFrame:
    columns: tuple[list[Any], ...] = (decoded.batches, decoded.rows, decoded.keys,
                                      decoded.ids, decoded.actions)
    return pl.DataFrame([pl.Series(name, column, dtype=dtype) for (name, dtype), column in zip(
        {_BATCH: pl.Int64(), **schema}.items(), columns, strict=True)])


def rejects_frame(rejects: pl.DataFrame, originals: pl.DataFrame | None = None
                  ) -> pl.DataFrame:
    """Rejects named as `REJECT_FIELDS` -> the `hsbulk_*` columns, then each row's original
    fields from `originals` (`source_row` + the input's columns, less its `hsbulk_*` ones
    when the input was itself a rejects file)."""
    named = rejects.select(pl.col(name).cast(dtype).alias(REJECT_COLUMNS[name])
                           for name, dtype in REJECT_FIELDS.items())
    if originals is None:
        return named
    row = REJECT_COLUMNS[SOURCE_ROW]
    keep = [c for c in originals.columns if c != SOURCE_ROW and not is_reserved(c)]
    fields = originals.select(pl.col(SOURCE_ROW).cast(pl.Int64).alias(row), *keep)
    return named.join(fields, on=row, how="left", maintain_order="left")


def rejects_schema(columns: Iterable[str]) -> dict[str, pl.DataType]:
    """The schema `rejects_frame` gives for an input with these columns (all text)."""
    return {**REJECTS_FILE_SCHEMA, **{c: pl.String() for c in columns
                                if c != SOURCE_ROW and not is_reserved(c)}}


def frame_of(rows: Iterable[Sequence[Any]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    chunks = [pl.DataFrame(list(chunk), schema=schema, orient="row") for chunk in rows]
    return pl.concat(chunks) if chunks else pl.DataFrame(schema=schema)


@dataclass(slots=True)
class Summary:
    """The run's account. Invariant: rows_read = created + updated + unchanged + rejected
    + skipped (+ archived in archive mode: a row per record archived; with `--mirror`,
    `archived` counts records absent from the input, not rows)."""

    step: str
    object: str
    mode: str
    rows_read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    changed: int = 0  # --delta: rows sent because they differ from the state (of updated)
    new: int = 0  # --delta: rows whose key the state did not hold
    archived: int = 0  # --mode archive: rows archived; --delta --mirror: records archived
    # because the input no longer holds them
    skipped: int = 0  # --duplicates first|last: rows another row of their key stood for
    drifted: int = 0  # --delta --verify-sample: records edited in HubSpot, re-sent
    associations: int = 0
    association_rejects: int = 0
    association_calls: int = 0
    api_calls: int = 0
    http_429: int = 0
    retries: int = 0
    elapsed_s: float = 0.0
    records_per_s: float = 0.0
    state: str = "done"
    stop_reason: str | None = None
    checkpoint: str | None = None
    resumed: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        archived = self.archived if self.mode == "archive" else 0
        return self.rows_read == (self.created + self.updated + self.unchanged + archived
                                  + self.rejected + self.skipped)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["balanced"] = self.balanced
        return data


def write_summary(path: Path, summaries: Sequence[Summary], **extra: Any) -> None:
    totals = {key: sum(getattr(s, key) for s in summaries)
              for key in ("rows_read", "created", "updated", "unchanged", "rejected",
                          "skipped", *DELTA_COUNTS, "associations", "api_calls",
                          "http_429", "retries")}
    body: dict[str, Any] = {**totals, "steps": [s.as_dict() for s in summaries], **extra}
    if len(summaries) == 1:
        body = {**summaries[0].as_dict(), **extra}
    write_json(path, body)


DELTA_COUNTS = ("changed", "new", "archived", "drifted")


def render_summaries(summaries: Sequence[Summary]) -> Table:
    """One row per step; the unchanged/new/changed/archived/drifted/skipped columns when a
    step counted any (delta, archive and `--duplicates first|last` runs)."""
    table = Table(title="hsbulk summary")
    delta = ("unchanged", *DELTA_COUNTS, "skipped")
    shown = [n for n in delta if any(getattr(s, n) for s in summaries)]
    for name in ("step", "rows", "created", "updated", *shown, "rejected", "associations",
                 "calls", "429s", "time", "rec/s", "state"):
        table.add_column(name, justify="left" if name in {"step", "state"} else "right")
    for s in summaries:
        table.add_row(s.step, f"{s.rows_read:,}", f"{s.created:,}", f"{s.updated:,}",
                      *(f"{getattr(s, n):,}" for n in shown),
                      f"{s.rejected:,}", f"{s.associations:,}"
                      + (f" ({s.association_rejects:,} not found)" if s.association_rejects
                         else ""), f"{s.api_calls:,}",
                      f"{s.http_429:,}", f"{s.elapsed_s:.1f}s", f"{s.records_per_s:,.0f}",
                      s.state if s.stop_reason is None else f"{s.state}: {s.stop_reason}")
    return table


class Progress(Protocol):
    """What a run reports as it goes (`progress=` of every run in `engine.api`).

    Calls come from the event loop's thread, often (every answered batch or page): keep
    them cheap and never block. `ProgressView` (a rich bar, or log lines) is the CLI's.
    """

    def start(self, description: str, total: int | None, done_before: int = 0,
              unit: str = "rows") -> None:
        """A run (an import step, an export) starts: `total` units if known, `done_before`
        of them finished by an earlier run of the same journal."""

    def update(self, *, done: int, total: int | None, sent: int, rejected: int, retries: int,
               http_429: int, description: str, done_before: int = 0) -> None:
        """An import: `done` rows settled (sent or rejected), `sent` by this run."""

    def update_export(self, *, read: int, written: int, parts: int, total: int | None,
                      retries: int, http_429: int, description: str) -> None:
        """An export: `read` records by this run, `written` in `parts` part files."""

    def stop(self) -> None:
        """The run ended (done, stopped or failed)."""


class ProgressView:
    """A live bar on a terminal, periodic log lines elsewhere (or nothing with quiet).

    Honest on resume: rows (records) an earlier run finished move the bar but not the rate,
    so the rate and the ETA are this run's own pace over what is left. `start` places the
    bar; `update` reports an import, `update_export` an export (records read, part files
    written). Off a terminal a line is logged at most every `interval_s` of `clock`
    (default `default_interval_s`, which tests may lower for every view of a run).
    """

    default_interval_s = 5.0

    def __init__(self, *, quiet: bool = False, interval_s: float | None = None,
                 console: Console | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console or Console(stderr=True)
        self.live = not quiet and self.console.is_terminal
        self.quiet = quiet
        self.interval_s = self.default_interval_s if interval_s is None else interval_s
        self.clock = clock
        self._last_log = -math.inf
        self._progress: RichProgress | None = None
        self._task: TaskID | None = None
        self._started = clock()

    def start(self, description: str, total: int | None, done_before: int = 0,
              unit: str = "rows") -> None:
        """A new bar at `done_before` of `total` (rows an earlier run finished)."""
        self._started = self.clock()
        self._last_log = -math.inf
        if self.live:
            self._progress = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                TextColumn("{task.fields[eta]}"), console=self.console, transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(description, total=total,
                                                 completed=done_before, stats="", eta="")
        elif not self.quiet:
            size = f"{total:,} {unit}" if total is not None else ""
            before = f"{done_before:,} done before" if done_before else ""
            detail = ", ".join(p for p in (size, before) if p)
            log.info("%s: started%s", description, f" ({detail})" if detail else "")

    def update(self, *, done: int, total: int | None, sent: int, rejected: int, retries: int,
               http_429: int, description: str, done_before: int = 0) -> None:
        """An import: `done` rows settled (sent or rejected), `done_before` of them by an
        earlier run; `sent` rows sent by this run."""
        if self.quiet:
            return
        rate = self._rate(done - done_before)
        stats = (f"{rate:,.0f} rows/s, sent {sent:,}, rejected {rejected:,}, "
                 f"retries {retries:,}, 429s {http_429:,}")
        self._show(description, done, total, "rows", stats, rate)

    def update_export(self, *, read: int, written: int, parts: int, total: int | None,
                      retries: int, http_429: int, description: str) -> None:
        """An export: `read` records read by this run, `written` records in `parts` part
        files (earlier runs' too)."""
        if self.quiet:
            return
        rate = self._rate(read)
        stats = (f"read {read:,} ({rate:,.0f} records/s), {parts:,} part files, "
                 f"retries {retries:,}, 429s {http_429:,}")
        self._show(description, written, total, "records written", stats, rate)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _rate(self, fresh: int) -> float:
        """Units per second done by this run since `start`."""
        return max(fresh, 0) / max(self.clock() - self._started, 1e-9)

    def _show(self, description: str, done: int, total: int | None, unit: str, stats: str,
              rate: float) -> None:
        eta = ""
        if total and rate > 0:
            eta = f"ETA {max(total - done, 0) / rate:,.0f}s"
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, total=total, stats=stats, eta=eta)
            return
        now = self.clock()
        if now - self._last_log < self.interval_s:
            return
        self._last_log = now
        log.info("%s: %s/%s %s, %s%s", description, f"{done:,}",
                 f"{total:,}" if total is not None else "?", unit, stats,
                 f", {eta}" if eta else "")


def print_table(table: Table, *, quiet: bool = False, stderr: bool = False) -> None:
    """The summary table on stdout (on stderr when stdout carries an output file)."""
    if not quiet:
        stream = sys.stderr if stderr else sys.stdout
        console = Console(file=stream)
        if not console.is_terminal:
            console = Console(file=stream, width=140)
        console.print(table)
