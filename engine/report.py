"""What a run tells its user: results and rejects files, the summary JSON, progress.

Files are CSV or Parquet by extension and are written to a temporary name, then renamed,
so a reader never sees half a file. Progress is a live rich bar on a terminal and a plain
log line every few seconds otherwise.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

log = logging.getLogger("hsbulk")

RESULT_SCHEMA = {"source_row": pl.Int64(), "id": pl.String(), "action": pl.String()}
REJECT_SCHEMA = {"source_row": pl.Int64(), "column": pl.String(), "value": pl.String(),
                 "code": pl.String(), "message": pl.String()}


def file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in {".csv", ".txt"}:
        return "csv"
    if suffix in {".parquet", ".pq"}:
        return "parquet"
    if suffix in {".ndjson", ".jsonl"}:
        return "ndjson"
    return "csv"


def write_frame(path: Path, frame: pl.DataFrame) -> None:
    """Write `frame` to `path` (format by extension) through a temp file + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    kind = file_format(path)
    if kind == "parquet":
        frame.write_parquet(temp)
    elif kind == "ndjson":
        frame.write_ndjson(temp)
    else:
        frame.write_csv(temp)
    os.replace(temp, path)


def frame_of(rows: Iterable[Sequence[Any]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    chunks = [pl.DataFrame(list(chunk), schema=schema, orient="row") for chunk in rows]
    return pl.concat(chunks) if chunks else pl.DataFrame(schema=schema)


@dataclass(slots=True)
class Summary:
    """The run's account. Invariant: rows_read = created + updated + unchanged + rejected."""

    step: str
    object: str
    mode: str
    rows_read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
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
        return self.rows_read == self.created + self.updated + self.unchanged + self.rejected

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["balanced"] = self.balanced
        return data


def write_summary(path: Path, summaries: Sequence[Summary], **extra: Any) -> None:
    totals = {key: sum(getattr(s, key) for s in summaries)
              for key in ("rows_read", "created", "updated", "unchanged", "rejected",
                          "associations", "api_calls", "http_429", "retries")}
    body: dict[str, Any] = {**totals, "steps": [s.as_dict() for s in summaries], **extra}
    if len(summaries) == 1:
        body = {**summaries[0].as_dict(), **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temp.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
    os.replace(temp, path)


def render_summaries(summaries: Sequence[Summary]) -> Table:
    table = Table(title="hsbulk summary")
    for name in ("step", "rows", "created", "updated", "rejected", "associations", "calls",
                 "429s", "time", "rec/s", "state"):
        table.add_column(name, justify="left" if name in {"step", "state"} else "right")
    for s in summaries:
        table.add_row(s.step, f"{s.rows_read:,}", f"{s.created:,}", f"{s.updated:,}",
                      f"{s.rejected:,}", f"{s.associations:,}"
                      + (f" ({s.association_rejects:,} not found)" if s.association_rejects
                         else ""), f"{s.api_calls:,}",
                      f"{s.http_429:,}", f"{s.elapsed_s:.1f}s", f"{s.records_per_s:,.0f}",
                      s.state if s.stop_reason is None else f"{s.state}: {s.stop_reason}")
    return table


class ProgressView:
    """A live bar on a terminal, periodic log lines elsewhere (or nothing with quiet)."""

    def __init__(self, *, quiet: bool = False, interval_s: float = 5.0,
                 console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live = not quiet and self.console.is_terminal
        self.quiet = quiet
        self.interval_s = interval_s
        self._last_log = 0.0
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._started = time.monotonic()

    def start(self, description: str, total: int | None) -> None:
        self._started = time.monotonic()
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=self.console, transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(description, total=total, stats="")
        elif not self.quiet:
            log.info("%s: started%s", description,
                     f" ({total:,} rows)" if total is not None else "")

    def update(self, *, done: int, total: int | None, sent: int, rejected: int, retries: int,
               http_429: int, description: str) -> None:
        if self.quiet:
            return
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = done / elapsed
        stats = (f"{rate:,.0f} rows/s sent {sent:,} rejected {rejected:,} "
                 f"retries {retries:,} 429s {http_429:,}")
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, total=total, stats=stats)
            return
        now = time.monotonic()
        if self.quiet or now - self._last_log < self.interval_s:
            return
        self._last_log = now
        eta = ""
        if total and rate > 0:
            eta = f", ETA {max(total - done, 0) / rate:,.0f}s"
        log.info("%s: %s/%s rows, %s%s", description, f"{done:,}",
                 f"{total:,}" if total is not None else "?", stats, eta)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def print_table(table: Table, *, quiet: bool = False) -> None:
    if not quiet:
        console = Console(file=sys.stdout)
        if not console.is_terminal:
            console = Console(file=sys.stdout, width=140)
        console.print(table)
