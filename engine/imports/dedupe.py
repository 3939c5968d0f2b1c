"""Rows sharing a natural key: never two of them sent in one run (`--duplicates`).

HubSpot compares unique values ignoring case (and e-mails and domains after trimming), so
two rows with the key ` Ann@x.org` and `ann@x.org` write the same record, the second
overwriting the first unseen. The policy picks which row is sent:

* `reject` (default): the first row is sent; later ones are rejected `DUPLICATE_KEY`,
  naming the first ("same email as row 12"), so the run ends with exit code 1.
* `first`: the first row is sent; later ones are skipped.
* `last`: the last row is sent; earlier ones are skipped. Which row is last comes from a
  pre-scan of the key column alone (normalised by the same rule as the import's), so a
  last row rejected for another value leaves its key unwritten (fix it in the rejects
  file and import that again).

A skipped row is journaled as an uncounted reject with code `DUPLICATE_SKIPPED`; the
results file lists it with the action `skipped` (and the id its key was written to), the
rejects file leaves it out, and the summary counts it in `skipped`
(`rows_read = created + updated + unchanged + archived + rejected + skipped`).

Keys are compared after normalisation of the key column alone, in a pre-scan before the
first batch (a row whose key is invalid is rejected for that, not counted here; the row
standing for a key may still be rejected for another value). Decisions depend only on the
input and the options, so a resumed run drops the same rows and builds the same batches.
Memory: the pre-scan spills hashed keys to disk past half a million (`dropped_rows`);
the run keeps only the rows it drops.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl

from engine.batch import KEY
from engine.imports.plan import RECORD_ID, Duplicates, ImportSpec, StepPlan
from engine.journal import Reject
from engine.mapping import ResolvedMapping
from engine.normalize import expressions, normalize
from engine.schema import Schema
from engine.source import SOURCE_ROW, Source
from engine.values import clean_key

DUPLICATE_KEY = "DUPLICATE_KEY"
DUPLICATE_SKIPPED = "DUPLICATE_SKIPPED"
SKIPPED = "skipped"  # the results file's action for a skipped duplicate


def folded(key: pl.Expr) -> pl.Expr:
    """A key as HubSpot compares unique values: trimmed, ignoring case."""
    return key.str.strip_chars().str.to_lowercase()


@dataclass(slots=True)
class Dedupe:
    """Sifts encoded chunks (source order) so that each key is sent by one row."""

    policy: Duplicates
    column: str  # the key's source column, named in rejects
    what: str  # the key as messages name it ("email", "record id")
    # the rows another row stands for (source_row, `__other`): only rows whose key repeats
    dropped: pl.DataFrame = field(default_factory=lambda: _no_drops())

    def __repr__(self) -> str:
        return f"Dedupe({self.policy}, dropped={self.dropped.height})"

    def sift(self, frame: pl.DataFrame) -> tuple[pl.DataFrame, list[Reject]]:
        """`frame` (source_row, ..., `__key`) without the rows another row's key stands
        for; the reasons as rejects (`DUPLICATE_KEY`, or uncounted `DUPLICATE_SKIPPED`)."""
        if not self.dropped.height or KEY not in frame.columns or not frame.height:
            return frame, []
        rows = frame.select(pl.col(SOURCE_ROW).cast(pl.Int64), pl.col(KEY))
        hit = rows.join(self.dropped, on=SOURCE_ROW, how="inner", maintain_order="left")
        if not hit.height:
            return frame, []
        rejects = [self._reason(row, other, key)
                   for row, key, other in hit.select(SOURCE_ROW, KEY, OTHER).iter_rows()]
        gone = hit.get_column(SOURCE_ROW).implode()
        return frame.filter(~pl.col(SOURCE_ROW).cast(pl.Int64).is_in(gone)), rejects

    def _reason(self, row: int, other: int, key: str) -> Reject:
        if self.policy == "reject":
            return Reject(row, self.column, DUPLICATE_KEY,
                          f"same {self.what} as row {other}: one record cannot take both "
                          "rows (merge them, or choose --duplicates first|last)", key)
        sent = "an earlier" if self.policy == "first" else "a later"
        return Reject(row, self.column, DUPLICATE_SKIPPED,
                      f"same {self.what} as row {other}: skipped, {sent} row is sent "
                      f"(--duplicates {self.policy})", key, counted=False)


OTHER = "__other"
_PARTS = 64  # hash partitions spilled to disk: each holds about 1/64 of the keys
_SPILL_ROWS = 500_000  # buffered (row, hash, hash) triples before they go to disk


def _no_drops() -> pl.DataFrame:
    return pl.DataFrame(schema={SOURCE_ROW: pl.Int64, OTHER: pl.Int64})


def dropped_rows(frames: Iterable[pl.DataFrame], policy: Duplicates) -> pl.DataFrame:
    """The pre-scan: frames of (source_row, `__key`) in source order -> (source_row,
    `__other`) for each row another row of its key stands for: the first row of the key
    (reject, first) or the last (last).

    Bounded memory whatever the input's size: each key becomes two seeded 64-bit hashes
    (24 bytes with its row); past `_SPILL_ROWS` keys they are spilled to disk in hash
    partitions, each then read alone, and only repeated keys are kept. Two keys are the
    same when both hashes agree; a clash of both for distinct keys (about one in 10^19
    per pair) is the only way two keys could be taken for one.
    """
    with tempfile.TemporaryDirectory(prefix="hsbulk-keys-") as folder:
        spill = _Spill(Path(folder))
        key = pl.col(KEY)
        for frame in frames:
            keyed = frame.select(pl.col(SOURCE_ROW).cast(pl.Int64), folded(key).alias(KEY))
            spill.add(keyed.filter(key != "").select(  # (null != "" is null: dropped)
                SOURCE_ROW, key.hash(seed=1).alias("h"), key.hash(seed=2).alias("g")))
        found = [_repeats(part, policy) for part in spill.partitions()]
    found = [f for f in found if f.height]
    return pl.concat(found).sort(SOURCE_ROW) if found else _no_drops()


def _repeats(part: pl.DataFrame, policy: Duplicates) -> pl.DataFrame:
    """One partition's rows that another row of their key stands for. Sorted, so repeats
    are neighbours (a hash table over the partition costs several times its size)."""
    part = part.sort("h", "g", SOURCE_ROW)
    same_as_previous = ((pl.col("h") == pl.col("h").shift(1))
                        & (pl.col("g") == pl.col("g").shift(1))).fill_null(False)
    repeated = part.filter(same_as_previous | same_as_previous.shift(-1).fill_null(False))
    pick = pl.col(SOURCE_ROW).max() if policy == "last" else pl.col(SOURCE_ROW).min()
    return (repeated.with_columns(pick.over("h", "g").alias(OTHER))
            .filter(pl.col(OTHER) != pl.col(SOURCE_ROW)).select(SOURCE_ROW, OTHER))


class _Spill:
    """(row, h, g) triples in `_PARTS` partitions by hash, written to disk in pieces."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pieces = 0
        self.buffered: list[pl.DataFrame] = []
        self.rows = 0

    def add(self, triples: pl.DataFrame) -> None:
        self.buffered.append(triples)
        self.rows += triples.height
        if self.rows > _SPILL_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        merged = pl.concat(self.buffered).with_columns((pl.col("h") % _PARTS).alias("__p"))
        for (part,), piece in merged.partition_by("__p", as_dict=True).items():
            piece.drop("__p").write_ipc(self.folder / f"{part}-{self.pieces}.arrow")
        self.pieces += 1
        self.buffered, self.rows = [], 0

    def partitions(self) -> Iterator[pl.DataFrame]:
        if not self.pieces:  # it all fit in the buffer: one partition, never on disk
            if self.rows:
                yield pl.concat(self.buffered)
            return
        self.flush()
        for part in range(_PARTS):
            files = sorted(self.folder.glob(f"{part}-*.arrow"))
            if files:
                yield pl.concat([pl.read_ipc(f) for f in files])


def dedupe_for(spec: ImportSpec, step: StepPlan, schema: Schema,
               source: Source) -> Dedupe | None:
    """The step's duplicate policy (None: rows carry no natural key, e.g. creates keyed by
    hsbulk's import key), from a pre-scan of the key column (see `key_frames`)."""
    column = step.key_column()
    if column is None or step.keys.key_property == spec.import_key:
        return None
    prop = step.keys.prop or RECORD_ID
    dropped = dropped_rows(key_frames(source, step, schema), spec.duplicates)
    return Dedupe(spec.duplicates, column, "record id" if prop == RECORD_ID else prop, dropped)


def key_frames(source: Source, step: StepPlan, schema: Schema) -> Iterator[pl.DataFrame]:
    """(source_row, `__key`) of every row, the key normalised as the import normalises it,
    reading the key column only."""
    column = step.key_column()
    assert column is not None
    target = step.key_target()
    frames = source.batches(check=False, columns=[column])
    if target is None:  # a record id, or archive's key: cleaned as imports/archive.py does
        key = clean_key(step.keys.prop, pl.col(column))
        for frame in frames:
            yield frame.select(SOURCE_ROW, key.alias(KEY))
        return
    plan = expressions(schema, ResolvedMapping((target,)),
                       replace(step.options, object_rules=False))
    for frame in frames:
        valid, _ = normalize(frame, plan)
        yield valid.select(SOURCE_ROW, pl.col(target.property).alias(KEY))
