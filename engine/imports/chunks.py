"""One chunk of the input, ready for the batcher: normalised, keyed and encoded.

Runs in a worker thread (polars releases the GIL): read -> normalise -> the record-id
and import-key columns -> rows without a usable key rejected -> (delta: rows diffed
against the state, unchanged ones dropped) -> inline associations -> one JSON input per
row. Deterministic, so a resumed run rebuilds the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import polars as pl

from engine.batch import KEY, clean_columns, input_expr
from engine.imports.delta import KEY_COPY, DeltaCounts, DeltaSession
from engine.imports.plan import RECORD_ID, InlineAssociation, KeyPlan
from engine.journal import Reject
from engine.lookups import Lookups
from engine.normalize import NormalizePlan, normalize
from engine.source import SOURCE_ROW, Source

ASSOCIATIONS = "__associations"

# encoded rows, local rejects, rows read, the delta diff's counts (None without --delta)
Chunk = tuple[pl.DataFrame, list[Reject], int, DeltaCounts | None]


@dataclass(frozen=True, slots=True)
class ChunkEncoder:
    plan: NormalizePlan
    keys: KeyPlan
    id_source: str | None  # update by record id: the column holding it
    import_key: str
    job_id: str
    inline: Sequence[InlineAssociation] = ()
    delta: DeltaSession | None = None
    lookups: Lookups | None = None  # owners, pipelines, stages by name (engine/lookups.py)

    @property
    def _keyed_by_import_key(self) -> bool:
        return self.keys.key_property == self.import_key

    def chunks(self, source: Source) -> Iterator[Chunk]:
        for frame in source.batches():
            yield self.encode(frame)

    def encode(self, frame: pl.DataFrame) -> Chunk:
        valid, rejected = normalize(frame, self.plan)
        if self.lookups is not None:
            valid, rejected = self.lookups.apply(valid, rejected)
        if self.id_source is not None:
            ids = frame.select(pl.col(SOURCE_ROW).cast(pl.Int64),
                               pl.col(self.id_source).str.strip_chars().alias(RECORD_ID))
            valid = valid.join(ids, on=SOURCE_ROW, how="left", maintain_order="left")
        if self._keyed_by_import_key:
            valid = valid.with_columns(
                pl.concat_str(pl.lit(f"{self.job_id}-"), pl.col(SOURCE_ROW).cast(pl.String))
                .alias(self.import_key))
        valid, local = self._without_bad_keys(valid)
        counts = None
        if self.delta is not None:
            valid, counts = self.delta.apply(valid)
        if rejected.height:
            sent = rejected.get_column(SOURCE_ROW).is_in(valid.get_column(SOURCE_ROW).implode())
            rejected = rejected.with_columns(sent.alias("__sent"))
        local += [Reject(int(r[0]), r[1] or "", r[3], r[4], r[2], not r[5])
                  for r in rejected.iter_rows()]
        return (self._encoded(self._with_inline_associations(valid, frame)), local,
                frame.height, counts)

    def _encoded(self, valid: pl.DataFrame) -> pl.DataFrame:
        keys = self.keys
        properties = list(self.plan.properties)
        if self._keyed_by_import_key:
            properties.append(self.import_key)
        id_column, key_column = keys.id_column, keys.key_column
        if self.delta is not None:  # property columns are masked: the key's copy is whole
            id_column = KEY_COPY if id_column == key_column else id_column
            key_column = KEY_COPY
        inputs = input_expr(properties, id_column=id_column, id_property=keys.id_property,
                            associations_column=ASSOCIATIONS if self.inline else None,
                            clean=clean_columns(valid, properties))
        return valid.select(pl.col(SOURCE_ROW), inputs,
                            *([pl.col(key_column).alias(KEY)] if key_column else []))

    def _without_bad_keys(self, valid: pl.DataFrame) -> tuple[pl.DataFrame, list[Reject]]:
        """Rows without a usable key cannot be identified: rejected before any call."""
        column = self.keys.key_column
        if column is None:
            return valid, []
        key = pl.col(column)
        bad_key = key.is_null() | (key == "")
        if column == RECORD_ID:
            bad_key = bad_key | ~key.str.contains(r"^\d+$")
        missing = valid.filter(bad_key)
        if not missing.height:
            return valid, []
        rejects = [
            Reject(row, column, "MISSING_ID" if value in (None, "") else "INVALID_ID",
                   f"{column} is needed to identify the record"
                   + ("" if value in (None, "") else
                      f"; {value!r} is not a HubSpot record id"), value)
            for row, value in missing.select(SOURCE_ROW, column).iter_rows()
        ]
        return valid.filter(~bad_key), rejects

    def _with_inline_associations(self, valid: pl.DataFrame,
                                  frame: pl.DataFrame) -> pl.DataFrame:
        """Add each row's `associations` JSON array (null when no target is known)."""
        if not self.inline:
            return valid
        keys = frame.select(pl.col(SOURCE_ROW).cast(pl.Int64), *(
            pl.col(a.column).str.strip_chars().str.to_lowercase().alias(f"__a{i}")
            for i, a in enumerate(self.inline)))
        valid = valid.join(keys, on=SOURCE_ROW, how="left", maintain_order="left")
        parts = [
            pl.lit('{"to":{"id":"')
            + pl.col(f"__a{i}").replace_strict(dict(a.ids), default=None, return_dtype=pl.String)
            + pl.lit(f'"}},"types":[{{"associationCategory":"{a.category}",'
                     f'"associationTypeId":{a.type_id}}}]}}')
            for i, a in enumerate(self.inline)
        ]
        joined = pl.concat_str(parts, separator=",", ignore_nulls=True)
        return valid.with_columns(
            pl.when(joined.is_not_null() & (joined != ""))
            .then(pl.lit("[") + joined + pl.lit("]")).alias(ASSOCIATIONS))
