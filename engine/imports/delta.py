"""Delta loads (`--delta`): send only the rows, and the properties, that changed.

Each chunk's rows are diffed against the state (engine.journal.DeltaStore) in one
vectorised pass: the chunk's keys are looked up with one query, the stored properties
JSON is decoded by polars and compared per property column. A row none of whose
non-empty values differs from the state is `unchanged` and never sent (an empty cell
never clears a value, so it is no change); a row whose key the state lacks is `new`; the
rest are `changed` and, unless `full-rows`, send only the properties that differ.

The state is diffed as it stood when the run started (`DeltaStore.lookup_as_of`), so a
resumed run builds the same batches as its first attempt; it changes only from confirmed
answers, after the journal has their batch DONE (imports/writer.py).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from engine.errors import ConfigError
from engine.journal import DeltaStore

DeltaMode = Literal["on", "full-rows", "refresh"]
DELTA_MODES: tuple[DeltaMode, ...] = ("on", "full-rows", "refresh")

FOLDED_KEY = "__dkey"  # the row's key, case-folded as the state holds it
KEY_COPY = "__did"  # the key column before masking (the input's id and the batch key)
_STORED = "__dstored"
_OLD = "__dold"
_NEW = "__dnew"
_SEND = "__dsend"


def delta_mode(value: object) -> DeltaMode | None:
    """`--delta [on|full-rows|refresh]` / `delta = true | "full-rows" | "refresh"`."""
    if value is None or value is False:
        return None
    if value is True:
        return "on"
    if isinstance(value, str) and value in DELTA_MODES:
        return value
    raise ConfigError(f"delta must be true, false or one of {', '.join(DELTA_MODES)}; "
                      f"got {value!r}")


def default_state_path(folder: Path, object_name: str, key_property: str,
                       base_url: str) -> Path:
    """`state-OBJECT-DIGEST.db` in the journal's folder: one per object, key and portal."""
    digest = hashlib.sha256("\0".join((object_name, key_property, base_url)).encode()
                            ).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", object_name)
    return folder / f"state-{name}-{digest}.db"


@dataclass(slots=True)
class DeltaCounts:
    """Rows by what the diff found (and, after the pass, drift and mirror)."""

    def add(self, other: DeltaCounts) -> None:
        """Add a chunk's diff counts (drift and mirror are counted once, after the pass)."""
        self.new += other.new
        self.changed += other.changed
        self.unchanged += other.unchanged

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    drifted: int = 0
    archived: int = 0


def diff_frame(valid: pl.DataFrame, stored: pl.DataFrame, *, properties: Sequence[str],
               key_column: str, mode: DeltaMode) -> tuple[pl.DataFrame, DeltaCounts]:
    """The rows of `valid` to send, and the counts. Pure.

    `stored`: (`__dkey`, `__dstored` props JSON) for the keys the state holds. The rows
    kept carry `__did` (their key, unmasked); with mode "on" every property a changed row
    holds as stored is set to null, so the encoder leaves it out of the body.
    """
    frame = valid.with_columns(pl.col(key_column).alias(KEY_COPY))
    if stored.height == 0:  # nothing stored (a first night): every row is new
        return frame, DeltaCounts(new=frame.height)
    frame = frame.with_columns(pl.col(key_column).str.to_lowercase().alias(FOLDED_KEY)).join(
        stored, on=FOLDED_KEY, how="left", maintain_order="left")
    old = pl.col(_STORED).str.json_decode(pl.Struct(dict.fromkeys(properties, pl.String)))
    frame = frame.with_columns(old.alias(_OLD) if properties else pl.lit(None).alias(_OLD))
    changed = [pl.col(p).is_not_null() & pl.col(p).ne_missing(pl.col(_OLD).struct.field(p))
               for p in properties]
    is_new = pl.col(_STORED).is_null()
    send = pl.lit(True) if mode == "refresh" else is_new | pl.any_horizontal(
        changed or [pl.lit(False)])
    frame = frame.with_columns(is_new.alias(_NEW), send.alias(_SEND))
    flags = frame.select(pl.col(_NEW).sum().alias("new"), pl.col(_SEND).sum().alias("send"))
    new, sent = (int(v or 0) for v in flags.row(0))
    counts = DeltaCounts(new=new, changed=sent - new, unchanged=frame.height - sent)
    frame = frame.filter(pl.col(_SEND))
    if mode == "on" and counts.changed:
        frame = frame.with_columns(pl.when(c).then(pl.col(p)).alias(p)
                                   for p, c in zip(properties, changed, strict=True))
    return frame.drop(_STORED, _OLD, _NEW, _SEND, FOLDED_KEY), counts


@dataclass(frozen=True, slots=True)
class DeltaSession:
    """One run's use of the state: which run it is and how rows are diffed and confirmed.

    `apply` runs in the chunk worker thread: one lookup and one `mark_seen` per chunk."""

    store: DeltaStore
    run_id: int
    mode: DeltaMode
    properties: tuple[str, ...]
    key_column: str
    empty: bool = False  # the state held nothing when this (unresumed) run began

    @property
    def merge(self) -> bool:
        """Confirmed props merge into the stored ones, except when rebuilding (refresh)."""
        return self.mode != "refresh"

    def apply(self, valid: pl.DataFrame) -> tuple[pl.DataFrame, DeltaCounts]:
        if valid.height == 0 or self.empty:  # a first night: nothing to look up
            return (valid.with_columns(pl.col(self.key_column).alias(KEY_COPY)),
                    DeltaCounts(new=valid.height))
        # sorted: the state's B-tree is then walked in order (2-3x faster than file order)
        keys = valid.get_column(self.key_column).str.to_lowercase().unique().sort().to_list()
        rows = self.store.lookup_as_of(keys, self.run_id)
        stored = pl.DataFrame([(k, p) for k, _, p in rows], schema={
            FOLDED_KEY: pl.String, _STORED: pl.String}, orient="row")
        if rows:  # keys the state lacks are new: confirmed (hence seen) once written
            self.store.mark_seen([k for k, _, _ in rows], self.run_id)
        return diff_frame(valid, stored, properties=self.properties,
                          key_column=self.key_column, mode=self.mode)
