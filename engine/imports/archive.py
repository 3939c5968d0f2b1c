"""`--mode archive`: archive the records a file names, by record id or a unique property.

    source -> each row's key (ArchiveEncoder) -> batcher -> journal IN_FLIGHT
      -> ArchiveSender: ids by batch/read -> ids journaled -> batch/archive -> DONE

Only the column that identifies records is read; the others are ignored. Keys are
resolved to record ids with batch reads (`KeyReader`: by `idProperty`, or by id, so that
an id that does not exist is reported), 100 a call; a key that names no live record is
rejected `NOT_FOUND`. The ids are journaled (idmap, under `archive:<property>`) before the
archive call leaves: archiving frees a record's unique values, so a batch left in flight
by a crash could not find its records again. On resume such a batch archives the
journaled ids again (archive is idempotent) and counts them archived.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl

from engine.batch import INPUT, KEY, Batch, encode_body
from engine.client import HubSpotClient
from engine.errors import ApiError, FatalApiError, QuotaExhausted, RetryableApiError
from engine.imports.answers import Sent, reject_from
from engine.imports.chunks import Chunk
from engine.imports.plan import RECORD_ID, ImportSpec, KeyPlan, object_path
from engine.imports.reconcile import Found, KeyReader
from engine.imports.writer import Journal
from engine.journal import Reject, Result, Transition
from engine.source import SOURCE_ROW, Source
from engine.values import clean_key

ARCHIVED = "archived"  # the results file's action
NOT_FOUND = "NOT_FOUND"
ARCHIVE_LIMIT = 100  # ids per batch/archive call


@dataclass(frozen=True, slots=True)
class ArchiveEncoder:
    """Rows -> (source_row, key): the key cleaned as HubSpot compares it; rows without a
    usable key rejected before any call."""

    column: str  # the source column holding each row's key
    keys: KeyPlan

    @property
    def by_id(self) -> bool:
        return self.keys.key_column == RECORD_ID

    def chunks(self, source: Source) -> Iterator[Chunk]:
        for frame in source.batches():
            yield self.encode(frame)

    def encode(self, frame: pl.DataFrame) -> Chunk:
        raw = pl.col(self.column)
        key = clean_key(self.keys.prop, raw)
        keyed = frame.select(pl.col(SOURCE_ROW).cast(pl.Int64), raw.alias("__raw"),
                             key.alias(KEY))
        bad = pl.col(KEY).is_null() | (pl.col(KEY) == "")
        if self.by_id:
            bad = bad | ~pl.col(KEY).str.contains(r"^\d+$")
        rejects = [self._bad_key(row, value)
                   for row, value in keyed.filter(bad).select(SOURCE_ROW, "__raw").iter_rows()]
        valid = keyed.filter(~bad).select(
            SOURCE_ROW, pl.struct(pl.col(KEY).alias("id")).struct.json_encode().alias(INPUT),
            KEY)
        return valid, rejects, frame.height, None

    def _bad_key(self, row: int, value: str | None) -> Reject:
        missing = value is None or not value.strip()
        what = "the record id" if self.by_id else self.keys.prop
        message = f"{what} is needed to identify the record to archive"
        if not missing:
            message += f"; {value!r} is not a HubSpot record id"
        return Reject(row, self.column, "MISSING_ID" if missing else "INVALID_ID", message,
                      value)


class ArchiveSender:
    """Archives the records of a batch's keys; every row ends archived or rejected."""

    def __init__(self, client: HubSpotClient, spec: ImportSpec, keys: KeyPlan, column: str,
                 journal: Journal, resumed: Sequence[int] = ()) -> None:
        self.client = client
        self.obj = spec.object_type
        self.prop = keys.prop or RECORD_ID
        self.column = column
        self.journal = journal
        self.reader = KeyReader(client)
        self.path = object_path(spec.object_type, "batch/archive")
        self.resumed = frozenset(resumed)  # batches an earlier run left in flight
        self.idmap = (spec.object_name, f"archive:{self.prop}")

    async def send(self, batch: Batch, positions: Sequence[int], started: float,
                   ambiguous: bool = False) -> Sent:
        """Resolve the keys of `positions` to ids, journal them, archive them."""
        assert batch.keys is not None
        keys = {p: batch.keys[p] for p in positions}
        ids = await self._journaled(batch, list(keys.values()))
        wanted = [k for k in keys.values() if k.lower() not in ids]
        if wanted:
            found = await self._read(wanted)
            learned = {k: found[k.lower()].id for k in wanted if k.lower() in found}
            if learned:
                await self.journal.commit(Transition.learned_ids(
                    {(*self.idmap, k): rid for k, rid in learned.items()}))
            ids.update((k.lower(), rid) for k, rid in learned.items())
        out = Sent()
        targets: list[tuple[int, str]] = []
        for p, key in keys.items():
            rid = ids.get(key.lower())
            if rid is None:
                out.rejects.append(self._not_found(batch.rows[p], key))
            else:
                targets.append((batch.rows[p], rid))
        for start in range(0, len(targets), ARCHIVE_LIMIT):
            out.merge(await self._archive(targets[start:start + ARCHIVE_LIMIT]))
        return out

    async def _read(self, keys: list[str]) -> dict[str, Found]:
        """The live records holding `keys` (an answer of 404: none of them)."""
        try:
            return await self.reader.read(self.obj, self.prop, keys)
        except (FatalApiError, QuotaExhausted, RetryableApiError):
            raise
        except ApiError as exc:
            if exc.status == 404:
                return {}
            raise

    async def _journaled(self, batch: Batch, keys: list[str]) -> dict[str, str]:
        """Lower-cased key -> id journaled by an earlier attempt at this batch."""
        if batch.seq not in self.resumed:
            return {}
        return await self.journal.call(self.journal.checkpoint.lookup_ids, *self.idmap, keys)

    async def _archive(self, targets: list[tuple[int, str]]) -> Sent:
        """One batch/archive call (204, no body): each row archived, or all refused."""
        body = encode_body([orjson.dumps({"id": rid}).decode() for _, rid in targets])
        try:
            await self.client.request("POST", self.path, body=body)
        except (FatalApiError, QuotaExhausted, RetryableApiError):
            raise
        except ApiError as exc:
            return Sent(rejects=[reject_from(row, exc.status, exc.category, exc.message,
                                             exc.errors) for row, _ in targets])
        return Sent(results=[Result(row, rid, ARCHIVED) for row, rid in targets])

    def _not_found(self, row: int, key: str) -> Reject:
        what = "id" if self.prop == RECORD_ID else self.prop
        return Reject(row, self.column, NOT_FOUND,
                      f"no {self.obj} with {what} {key!r} (archived already, or never "
                      "created)", key)


def count_archived(rows: Iterable[list[tuple[Any, ...]]]) -> int:
    """Rows archived, from a step's journaled results (`iter_results`)."""
    return sum(1 for chunk in rows for _, _, action in chunk if action == ARCHIVED)
