"""The dry run: source -> mapping -> normalise over the whole input, no network.

`run_dry(...)` streams every batch, counts what would be sent and what would be rejected
and why, estimates API calls and time at a rate and a daily quota, writes the rejects file
and the `--emit-normalized` file (CSV or Parquet, by extension, appended per batch so memory
stays bounded), and returns a frozen `Plan` whose `render()` is the terminal report.
Exit code for the CLI: `plan.exit_code` (0 all rows valid, 1 some rejected).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import polars as pl

from engine.batch import KEY
from engine.errors import ConfigError
from engine.lookups import Lookups
from engine.mapping import MappingSpec, ResolvedMapping, resolve_mapping
from engine.normalize import (
    REJECT_SCHEMA,
    NormalizeOptions,
    NormalizePlan,
    date_order_evidence,
    expressions,
    normalize,
)
from engine.outputs import Output, escape_formulas, file_format, is_stdout, refuse_inputs
from engine.report import rejects_frame, rejects_schema
from engine.schema import Schema
from engine.source import SOURCE_ROW, Source, SourceSpec, open_source

if TYPE_CHECKING:  # imports/dedupe.py plans through this module
    from engine.imports.dedupe import Dedupe

INPUTS_PER_CALL = 100


class FrameWriter:
    """Append frames of one fixed schema to a CSV or Parquet output, batch by batch.

    The output is an `engine.outputs.Output` (atomic, 0600, `-` is stdout): it is in place
    only after `close()`; `discard()` after a failure leaves any earlier file as it was.
    CSV is appended as it comes (formula-looking text escaped); Parquet goes to part files
    in a private temp folder that are streamed into the output on `close()` (polars has no
    appendable Parquet writer), then removed.
    """

    def __init__(self, path: Path, schema: pl.Schema) -> None:
        self.path = path
        self.schema = schema
        kind = "csv" if is_stdout(path) else file_format(path)
        if kind == "ndjson" or (not is_stdout(path) and path.suffix.lower() not in (
                ".csv", ".parquet", ".pq")):
            raise ConfigError(f"{path}: name the file .csv or .parquet")
        self.kind: Literal["csv", "parquet"] = "parquet" if kind == "parquet" else "csv"
        self.rows = 0
        self._parts: list[Path] = []
        self._tmp: Path | None = None
        self._out = Output(path)
        if self.kind == "csv":
            pl.DataFrame(schema=schema).write_csv(self._out.handle)
        else:
            self._tmp = Path(tempfile.mkdtemp(prefix=".hsbulk-parts.", dir=self._out.folder))

    def write(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            return
        frame = frame.select(pl.col(name).cast(dtype) for name, dtype in self.schema.items())
        self.rows += frame.height
        if self.kind == "csv":
            escape_formulas(frame).write_csv(self._out.handle, include_header=False)
            return
        assert self._tmp is not None
        part = self._tmp / f"part-{len(self._parts):06d}.parquet"
        frame.write_parquet(part)
        self._parts.append(part)

    def close(self) -> None:
        """Finish the file and put it in place."""
        try:
            if self.kind == "parquet":
                if self._parts:
                    pl.scan_parquet(self._parts).sink_parquet(self._out.handle)
                else:
                    pl.DataFrame(schema=self.schema).write_parquet(self._out.handle)
        except BaseException:
            self.discard()
            raise
        self._drop_parts()
        self._out.close()

    def discard(self) -> None:
        """Drop what was written (after a failure)."""
        self._drop_parts()
        self._out.discard()

    def _drop_parts(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


@dataclass(frozen=True, slots=True)
class Plan:
    """What an import would do; `render()` for the terminal."""

    source: str
    object_type: str
    fingerprint: str
    mapping: tuple[tuple[str, str], ...]
    unmapped: tuple[str, ...]
    ignored: tuple[str, ...]
    notes: tuple[str, ...]
    date_order: str | None
    rows_read: int
    blank_rows: int
    rows_valid: int
    rows_rejected: int
    fields_dropped: int
    reject_reasons: tuple[tuple[str, str, int], ...]   # (code, column, count), most first
    api_calls: int
    rate_per_10s: int
    seconds_at_rate: float
    daily_quota: int | None
    days_at_quota: float | None
    rejects_path: str | None = None
    normalized_path: str | None = None
    elapsed_s: float = 0.0
    extra: tuple[tuple[str, str], ...] = field(default=())

    @property
    def exit_code(self) -> int:
        return 1 if self.rows_rejected else 0

    def render(self) -> str:
        lines = [f"Dry run: {self.source} -> {self.object_type} (nothing sent)"]
        lines.append("Mapping:")
        lines += [f"  {src} -> {prop}" for src, prop in self.mapping]
        if self.unmapped:
            lines.append(f"Ignored columns (not mapped): {', '.join(self.unmapped)}")
        if self.ignored:
            lines.append(f"Dropped targets: {'; '.join(self.ignored)}")
        lines += [f"Note: {note}" for note in self.notes]
        if self.date_order:
            lines.append(f"Date order: {self.date_order}")
        lines.append(f"Rows read: {self.rows_read:,}"
                     + (f" (+{self.blank_rows:,} blank skipped)" if self.blank_rows else ""))
        lines.append(f"Valid: {self.rows_valid:,}   Rejected: {self.rows_rejected:,}"
                     + (f"   Fields dropped: {self.fields_dropped:,}"
                        if self.fields_dropped else ""))
        if self.reject_reasons:
            lines.append("Top reject reasons:")
            lines += [f"  {count:>10,}  {code:<18} {column}"
                      for code, column, count in self.reject_reasons[:10]]
        lines.append(f"API calls: {self.api_calls:,} (batches of {INPUTS_PER_CALL}); "
                     f"~{_duration(self.seconds_at_rate)} at {self.rate_per_10s}/10s")
        if self.daily_quota is not None and self.days_at_quota is not None:
            lines.append(f"Daily quota {self.daily_quota:,}: {self.days_at_quota:.2f} day(s) "
                         "of quota")
        if self.rejects_path:
            lines.append(f"Rejects: {self.rejects_path}")
        if self.normalized_path:
            lines.append(f"Normalized values: {self.normalized_path}")
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def detect_date_order(source: Source, columns: Sequence[str]) -> Literal["DMY", "MDY"] | None:
    """Stream the date columns until one value decides the order.

    None when there are no slashed dates at all; `ConfigError` when every slashed date
    fits both orders (asking for the date order).
    """
    ambiguous = 0
    for batch in source.batches(columns=columns):
        dmy, mdy, both = date_order_evidence(batch, columns)
        if dmy and not mdy:
            return "DMY"
        if mdy and not dmy:
            return "MDY"
        if dmy and mdy:
            raise ConfigError(f"dates in {', '.join(columns)} are written both day-first and "
                              "month-first: set date_order to DMY or MDY")
        ambiguous += both
    if ambiguous:
        raise ConfigError(f"dates such as 03/04/2024 in {', '.join(columns)} could be "
                          "day-first or month-first and nothing in the file decides: set "
                          "date_order to DMY or MDY")
    return None


def _date_columns(schema: Schema, mapping: ResolvedMapping) -> list[str]:
    columns = []
    for target in mapping.targets:
        prop = schema.get(target.property)
        if (target.column is not None and prop is not None and prop.type in ("date", "datetime")
                and target.options.date_order is None):
            columns.append(target.column)
    return list(dict.fromkeys(columns))


def prepare(source: Source, schema: Schema, mapping: MappingSpec | ResolvedMapping,
            options: NormalizeOptions) -> tuple[ResolvedMapping, NormalizeOptions, NormalizePlan]:
    """Resolve the mapping, settle the date order from the file, and build the plan.

    Shared by the dry run and the importer: everything that can fail before a call.
    """
    resolved = (mapping if isinstance(mapping, ResolvedMapping)
                else resolve_mapping(mapping, source.columns, schema))
    if options.date_order is None:
        date_columns = _date_columns(schema, resolved)
        if date_columns:
            order = detect_date_order(source, date_columns)
            if order is not None:
                options = _replace_order(options, order)
    return resolved, options, expressions(schema, resolved, options)


def _replace_order(options: NormalizeOptions, order: Literal["DMY", "MDY"]) -> NormalizeOptions:
    return replace(options, date_order=order)


@dataclass(slots=True)
class _Tally:
    """What the dry run has counted so far."""

    drop_field: bool
    rows_valid: int = 0
    rows_rejected: int = 0
    fields_dropped: int = 0
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, batch: pl.DataFrame, valid: pl.DataFrame, rejects: pl.DataFrame,
            skipped: int = 0) -> None:
        self.rows_valid += valid.height
        self.rows_rejected += batch.height - valid.height - skipped
        if not rejects.height:
            return
        if self.drop_field:
            self.fields_dropped += rejects.filter(
                pl.col(SOURCE_ROW).is_in(valid[SOURCE_ROW].implode())).height
        for code, column, count in rejects.group_by("code", "column").len().rows():
            self.reasons[(code, column or "")] += count


def _sifted(valid: pl.DataFrame, rejects: pl.DataFrame, dedupe: Dedupe, key: str,
            ) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """`--duplicates` on a normalised chunk: (valid, rejects with DUPLICATE_KEY rows, rows
    skipped by first/last: neither sent nor rejected)."""
    if key not in valid.columns:
        return valid, rejects, 0
    kept, dropped = dedupe.sift(valid.with_columns(pl.col(key).alias(KEY)))
    if not dropped:
        return valid, rejects, 0
    counted = pl.DataFrame([(r.source_row, r.column, r.value, r.code, r.message)
                            for r in dropped if r.counted], schema=REJECT_SCHEMA, orient="row")
    if counted.height:
        rejects = pl.concat([rejects.cast(REJECT_SCHEMA), counted]).sort(
            SOURCE_ROW, maintain_order=True)
    return kept.drop(KEY), rejects, len(dropped) - counted.height


def _open_writers(src: Source, plan: NormalizePlan, rejects_path: Path | str | None,
                  normalized_path: Path | str | None,
                  ) -> tuple[FrameWriter | None, FrameWriter | None]:
    """The rejects and normalised-rows writers asked for (both or neither on a failure)."""
    reject_schema = pl.Schema(rejects_schema(src.columns))
    rejects_out = FrameWriter(Path(rejects_path), reject_schema) if rejects_path else None
    if not normalized_path:
        return rejects_out, None
    valid_schema = pl.Schema({SOURCE_ROW: pl.Int64(),
                              **{name: pl.String() for name in plan.properties}})
    try:
        return rejects_out, FrameWriter(Path(normalized_path), valid_schema)
    except BaseException:
        if rejects_out is not None:
            rejects_out.discard()
        raise


def run_dry(
    source: SourceSpec | Source,
    schema: Schema,
    mapping: MappingSpec | ResolvedMapping,
    options: NormalizeOptions | None = None,
    *,
    rejects_path: Path | str | None = None,
    normalized_path: Path | str | None = None,
    rate_per_10s: int = 100,
    daily_quota: int | None = None,
    lookups: Lookups | None = None,
    duplicates: tuple[Dedupe, str] | None = None,
) -> Plan:
    """Stream the whole input through source -> normalise; write files; return the Plan.

    Raises `SourceError` (malformed input) or `ConfigError` (mapping, options, date order)
    before or while streaming; never touches the network.
    """
    started = time.perf_counter()
    if rate_per_10s < 1:
        raise ConfigError("the rate must be at least 1 request per 10 s")
    src = source if isinstance(source, Source) else open_source(source)
    refuse_inputs([Path(p) for p in (rejects_path, normalized_path) if p],
                  [*src.files, src.spec.path])
    resolved, options, plan = prepare(src, schema, mapping, options or NormalizeOptions())
    rejects_out, valid_out = _open_writers(src, plan, rejects_path, normalized_path)
    writers = [w for w in (rejects_out, valid_out) if w is not None]
    tally = _Tally(drop_field=options.on_invalid == "drop-field")
    try:
        for batch in src.batches():
            valid, rejects = normalize(batch, plan)
            if lookups is not None:  # owners, pipelines, stages, read by the caller
                valid, rejects = lookups.apply(valid, rejects)
            skipped = 0
            if duplicates is not None:  # rows sharing a key, as the run would sift them
                valid, rejects, skipped = _sifted(valid, rejects, *duplicates)
            tally.add(batch, valid, rejects, skipped)
            if rejects_out is not None and rejects.height:
                rejects_out.write(rejects_frame(rejects, batch))
            if valid_out is not None:
                valid_out.write(valid)
    except BaseException:
        for writer in writers:
            writer.discard()
        raise
    for writer in writers:
        writer.close()
    rows_valid, reasons = tally.rows_valid, tally.reasons
    api_calls = math.ceil(rows_valid / INPUTS_PER_CALL)
    return Plan(
        source=src.spec.path,
        object_type=str(schema.object_type),
        fingerprint=src.fingerprint().digest,
        mapping=tuple((t.source_label, t.property) for t in resolved.targets),
        unmapped=resolved.unmapped,
        ignored=resolved.ignored,
        notes=resolved.notes,
        date_order=options.date_order,
        rows_read=src.stats.rows_read,
        blank_rows=src.stats.blank_rows,
        rows_valid=rows_valid,
        rows_rejected=tally.rows_rejected,
        fields_dropped=tally.fields_dropped,
        reject_reasons=tuple((code, column, count) for (code, column), count
                             in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        api_calls=api_calls,
        rate_per_10s=rate_per_10s,
        seconds_at_rate=api_calls / rate_per_10s * 10.0,
        daily_quota=daily_quota,
        days_at_quota=(api_calls / daily_quota) if daily_quota else None,
        rejects_path=str(rejects_path) if rejects_path else None,
        normalized_path=str(normalized_path) if normalized_path else None,
        elapsed_s=time.perf_counter() - started,
    )
