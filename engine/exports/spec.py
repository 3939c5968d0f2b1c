"""What an export is asked to do (`ExportSpec`) and its account (`ExportSummary`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.exports.parts import Format
from engine.outputs import write_json
from engine.schema import canonical_object


@dataclass(frozen=True, slots=True)
class ExportSpec:
    """What to export and where. `properties` None means every property of the schema."""

    object_type: str
    out_dir: Path
    format: Format = "parquet"
    properties: tuple[str, ...] | None = None
    associations: tuple[str, ...] = ()
    since: datetime | None = None
    lookback: timedelta = timedelta(0)
    archived: bool = False
    partitions: int = 4  # concurrent search readers beside the list cursor
    escape_formulas: bool = True
    checkpoint: Path | None = None  # default OUT/.hsbulk/export-{object}.db
    rows_per_part: int = 50_000
    search_chunk: int = 10_000  # at most this many records per piece a search reader cuts

    def __post_init__(self) -> None:
        if self.format not in ("parquet", "csv"):
            raise ConfigError(f"export format must be parquet or csv, not {self.format!r}")
        if self.partitions < 0:
            raise ConfigError("export partitions must not be negative")
        if self.rows_per_part < 1:
            raise ConfigError("export rows per part must be at least 1")
        if self.since is not None and self.archived:
            raise ConfigError("an export since a time reads by search, which sees no "
                              "archived records: export either archived or since a time")
        if self.lookback < timedelta(0):
            raise ConfigError("export lookback must not be negative")

    @property
    def checkpoint_path(self) -> Path:
        if self.checkpoint is not None:
            return self.checkpoint
        return self.out_dir / ".hsbulk" / f"export-{canonical_object(self.object_type)}.db"

    @property
    def since_utc(self) -> datetime | None:
        if self.since is None:
            return None
        since = self.since if self.since.tzinfo else self.since.replace(tzinfo=UTC)
        return since.astimezone(UTC) - self.lookback


@dataclass(slots=True)
class ExportSummary:
    """The run's account: `records`/`edges` count everything written, resumed runs
    included; `records_read` counts what this run read."""

    object: str
    out_dir: str
    format: str
    records: int = 0
    edges: dict[str, int] = field(default_factory=dict)
    parts: int = 0
    records_read: int = 0
    api_calls: int = 0
    search_calls: int = 0
    list_calls: int = 0
    association_calls: int = 0
    http_429: int = 0
    retries: int = 0
    ranges: int = 0
    splits: int = 0
    elapsed_s: float = 0.0
    records_per_s: float = 0.0
    watermark: str | None = None
    since: str | None = None
    resumed: bool = False
    state: str = "done"
    unparsed_values: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_export_summary(path: Path, summary: ExportSummary) -> None:
    write_json(path, summary.as_dict())
