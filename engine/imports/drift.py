"""Drift (`--verify-sample N`): records someone edited in HubSpot since this state wrote them.

After a delta run's import pass, N records the run left unchanged are read back (batch
read by record id, 100 a call, only the properties the state holds) and compared with
the state per property type. HubSpot rewrites some values it stores (a trimmed string, a
lower-cased email or domain, a date or a datetime in another format, a number as other
text, a multi-checkbox in another order): none of those is drift. A record that differs
is re-sent with the state's values (batch update by record id, only the properties that
differ); one that is gone from HubSpot is forgotten by the state, so the next run sends
its row as new. The state changes only from confirmed answers.

`differences` is pure (tested with tables); `DriftCheck` does the reading and repairing.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

import msgspec
import orjson

from engine.batch import encode_body
from engine.client import HubSpotClient
from engine.errors import (
    ApiError,
    ConfigError,
    FatalApiError,
    QuotaExhausted,
    RetryableApiError,
)
from engine.imports.plan import object_path
from engine.journal import JournalThread
from engine.schema import ObjectType, Property, Schema

if TYPE_CHECKING:
    from engine.journal import DeltaStore

log = logging.getLogger("hsbulk.drift")

READ_LIMIT = 100  # inputs per batch/read (and per batch/update)
FOLDED = frozenset({"email", "domain", "website", "hs_email_domain"})  # stored lower-cased
DAY_MS = 86_400_000


# -- canonical values (pure) --------------------------------------------------------------


def _number(text: str) -> str:
    try:
        value = Decimal(text.replace(",", "").strip())
    except InvalidOperation:
        return text.strip()
    if not value.is_finite():
        return text.strip()
    return format(value.normalize(), "f") if value else "0"


def _epoch_ms(text: str) -> int | None:
    raw = text.strip()
    if raw.lstrip("-").isdigit():
        return int(raw)
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return round(value.timestamp() * 1000)


def _date(text: str) -> str:
    raw = text.strip()
    try:
        return date.fromisoformat(raw[:10]).isoformat() if len(raw) >= 10 and raw[4] == "-" \
            else datetime.fromtimestamp(int(raw) / 1000, UTC).date().isoformat()
    except (ValueError, OverflowError, OSError):
        return raw


def _datetime(text: str) -> str:
    ms = _epoch_ms(text)
    return str(ms) if ms is not None else text.strip()


def _multi(text: str) -> str:
    return ";".join(sorted({p.strip() for p in text.split(";") if p.strip()}))


def canonical(value: str | None, prop: Property | None) -> str | None:
    """The value as HubSpot would hold it, for comparison only (None: no value)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    kind = prop.type if prop is not None else "string"
    if kind == "number":
        return _number(text)
    if kind == "date":
        return _date(text)
    if kind == "datetime":
        return _datetime(text)
    if kind == "bool":
        return text.lower()
    if prop is not None and prop.is_multi:
        return _multi(text)
    if prop is not None and prop.name in FOLDED:
        return text.lower()
    return text


def is_same(stored: str | None, read: str | None, prop: Property | None) -> bool:
    """True when HubSpot's `read` value is the state's `stored` value, rewrites allowed.

    A multi-checkbox stored as `;a;b` (`--checkbox append`) only asked for a and b to be
    among the values: more values are not drift."""
    if prop is not None and prop.is_multi and stored is not None and stored.startswith(";"):
        wanted = set(_multi(stored).split(";")) - {""}
        return wanted <= set((_multi(read or "")).split(";"))
    return canonical(stored, prop) == canonical(read, prop)


def differences(stored: Mapping[str, str], read: Mapping[str, str | None],
                schema: Schema) -> dict[str, str]:
    """The stored properties whose HubSpot value differs (name -> the stored value)."""
    return {name: value for name, value in stored.items()
            if not is_same(value, read.get(name), schema.get(name))}


# -- reading back and repairing ------------------------------------------------------------


class _Item(msgspec.Struct):
    id: str
    properties: dict[str, str | None] = {}


class _Answer(msgspec.Struct):
    results: list[_Item] = []


_READ = msgspec.json.Decoder(_Answer)


@dataclass(slots=True)
class DriftOutcome:
    checked: int = 0
    drifted: int = 0  # records that differed (or were gone) and were repaired
    gone: int = 0  # of which: no longer in HubSpot (forgotten: re-sent as new next run)
    calls: int = 0


@dataclass(frozen=True, slots=True)
class _Sampled:
    key: str
    id: str
    props: dict[str, str]
    blob: str | bytes  # the props JSON as the state holds it


class DriftCheck:
    """Reads a sample of unchanged records back and re-sends those that drifted."""

    def __init__(self, client: HubSpotClient, obj: ObjectType, schema: Schema,
                 store: DeltaStore, run_id: int, thread: JournalThread) -> None:
        self.client = client
        self.obj = obj
        self.schema = schema
        self.store = store
        self.run_id = run_id
        self.call = thread.call

    async def run(self, n: int, rng: random.Random | None = None) -> DriftOutcome:
        outcome = DriftOutcome()
        if n <= 0:
            return outcome
        sample = await self.call(self.store.unchanged_sample, n, self.run_id,
                                 rng or random.Random())
        rows = [_Sampled(key, rid, dict(orjson.loads(blob)), blob) for key, rid, blob in sample]
        pending: list[tuple[_Sampled, dict[str, str]]] = []
        for start in range(0, len(rows), READ_LIMIT):
            pending += await self._check(rows[start:start + READ_LIMIT], outcome)
            while len(pending) >= READ_LIMIT or (pending and start + READ_LIMIT >= len(rows)):
                part, pending = pending[:READ_LIMIT], pending[READ_LIMIT:]
                outcome.drifted += await self._repair(part)
                outcome.calls += 1
        if outcome.drifted:
            log.info("drift: %d of %d sampled records differed in HubSpot and were re-sent",
                     outcome.drifted, outcome.checked)
        return outcome

    async def _check(self, part: Sequence[_Sampled], outcome: DriftOutcome
                     ) -> list[tuple[_Sampled, dict[str, str]]]:
        """Read `part` back; returns the records to repair (grouped by the caller into
        full update calls); records gone from HubSpot are forgotten here."""
        names = sorted({name for row in part for name in row.props})
        response = await self.client.post_json(
            object_path(self.obj, "batch/read"),
            {"properties": names, "inputs": [{"id": row.id} for row in part]})
        outcome.calls += 1
        outcome.checked += len(part)
        found = {item.id: item.properties for item in
                 _READ.decode(response.body or b"{}").results}
        repairs = [(row, diff) for row in part if row.id in found
                   for diff in [differences(row.props, found[row.id], self.schema)] if diff]
        gone = [row for row in part if row.id not in found]
        if gone:
            await self.call(self.store.forget, [row.key for row in gone])
            outcome.gone += len(gone)
            outcome.drifted += len(gone)
        return repairs

    async def _repair(self, repairs: Sequence[tuple[_Sampled, dict[str, str]]]) -> int:
        """Batch update by record id with the state's values; confirmed rows only."""
        inputs = [orjson.dumps({"id": row.id, "properties": diff}).decode()
                  for row, diff in repairs]
        try:
            response = await self.client.request(
                "POST", object_path(self.obj, "batch/update"), body=encode_body(inputs))
        except (FatalApiError, QuotaExhausted, RetryableApiError):
            raise
        except ApiError as exc:
            log.warning("drift: HubSpot refused the repair of %d records: %s", len(repairs),
                        exc.message)
            return 0
        answered = {item.id for item in _READ.decode(response.body or b"{}").results}
        confirmed = [(row.key, row.id, row.blob) for row, _ in repairs if row.id in answered]
        await self.call(self.store.confirm, confirmed, self.run_id)
        return len(confirmed)


def sample_size(value: object) -> int:
    """`--verify-sample N` / `verify_sample = N`: a whole number of records, at least 0."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        value = -1
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise ConfigError(f"verify sample {value!r}: give a whole number of records (>= 0)")
    return number
