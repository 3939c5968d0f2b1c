"""Exactly-once for creates: reading records back by their unique key.

`KeyReader` is the one reader of records by key (`batch/read` with `idProperty`, or by
record id); association key resolution uses it too. `Reconciler` decides, for create
inputs whose outcome is unknown (a batch in flight when the last run stopped) or that
HubSpot refused as taken (409), whether the record found is ours (this job created it)
or someone else's (a conflict: rejected, or updated with on_conflict 'update').
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import msgspec
import orjson

from engine.batch import Batch, encode_body
from engine.client import HubSpotClient
from engine.errors import ApiError, ConfigError, FatalApiError, RetryableApiError
from engine.imports.answers import BatchAnswer, Sent, reject_from
from engine.imports.plan import GROUPS, RECORD_ID, ImportSpec, KeyPlan, object_path
from engine.journal import Reject, Result
from engine.schema import ObjectType, Schema

log = logging.getLogger("hsbulk.import")

READ_LIMIT = 100  # inputs per batch/read
CLOCK_SKEW_S = 5.0  # how far HubSpot's createdAt may trail our clock and still be ours


class _ReadItem(msgspec.Struct):
    id: str
    createdAt: str | None = None
    properties: dict[str, str | None] = {}


class _ReadAnswer(msgspec.Struct):
    results: list[_ReadItem] = []


_READ = msgspec.json.Decoder(_ReadAnswer)
_UPDATE = msgspec.json.Decoder(BatchAnswer)


@dataclass(frozen=True, slots=True)
class Found:
    """A record read back by key."""

    id: str
    created_s: float | None  # createdAt, epoch seconds


class KeyReader:
    """Records by the value of a unique property (or by record id), 100 keys a call."""

    def __init__(self, client: HubSpotClient) -> None:
        self.client = client

    async def read(self, obj: ObjectType, prop: str, keys: Iterable[str]) -> dict[str, Found]:
        """Lower-cased key -> the record holding it, for the keys that exist."""
        wanted = list(keys)
        found: dict[str, Found] = {}
        for start in range(0, len(wanted), READ_LIMIT):
            inputs = [{"id": k} for k in wanted[start:start + READ_LIMIT]]
            payload: dict[str, object] = {"properties": [prop], "inputs": inputs}
            if prop != RECORD_ID:
                payload["idProperty"] = prop
            response = await self.client.post_json(object_path(obj, "batch/read"), payload)
            for item in _READ.decode(response.body or b"{}").results:
                value = item.id if prop == RECORD_ID else item.properties.get(prop)
                if value is not None:
                    found[value.lower()] = Found(item.id, _epoch_s(item.createdAt))
        return found


class Reconciler:
    """Which create inputs landed, and whose the records found by their key are."""

    def __init__(self, client: HubSpotClient, spec: ImportSpec, keys: KeyPlan) -> None:
        assert keys.key_property is not None or spec.mode != "create"
        self.client = client
        self.spec = spec
        self.keys = keys
        self.reader = KeyReader(client)

    async def _found(self, batch: Batch, positions: Sequence[int]) -> dict[str, Found]:
        assert batch.keys is not None and self.keys.key_property is not None
        return await self.reader.read(self.spec.object_type, self.keys.key_property,
                                      [batch.keys[p] for p in positions])

    async def reconcile(self, batch: Batch, positions: list[int],
                        started_at: float | None) -> tuple[Sent, list[int]]:
        """A create batch was in flight when the last run stopped: which rows landed?"""
        assert batch.keys is not None
        found = await self._found(batch, positions)
        landed = [p for p in positions if batch.keys[p].lower() in found]
        out = await self._claim(batch, landed, found, started_at or time.time(),
                                maybe_ours=True)
        rest = [p for p in positions if p not in set(landed)]
        if landed:
            log.info("batch %d: %d of %d rows had landed before the interruption; "
                     "sending the other %d", batch.seq, len(landed), len(positions), len(rest))
        return out, rest

    async def resolve_conflicts(self, batch: Batch, positions: list[int], started: float,
                                message: str, *, maybe_ours: bool) -> Sent:
        """HubSpot refused these creates as taken: claim ours, settle the others."""
        assert batch.keys is not None
        found = await self._found(batch, positions)
        out = await self._claim(batch, [p for p in positions if batch.keys[p].lower() in found],
                                found, started, maybe_ours=maybe_ours)
        out.rejects += [Reject(batch.rows[p], self.keys.prop, "CONFLICT", message,
                               batch.keys[p])
                        for p in positions if batch.keys[p].lower() not in found]
        return out

    async def _claim(self, batch: Batch, positions: list[int], found: Mapping[str, Found],
                     started: float, *, maybe_ours: bool) -> Sent:
        """Records found by key: ours (created by this job) or someone else's (conflict).

        Ours when the key is hsbulk's import key, or when an attempt of ours may have
        landed unseen and the record was created after this batch first left.
        """
        assert batch.keys is not None
        prop = self.keys.prop
        ours_always = prop == self.spec.import_key
        out = Sent()
        foreign: list[tuple[int, str]] = []
        for p in positions:
            record = found[batch.keys[p].lower()]
            created = record.created_s
            if ours_always or (maybe_ours and (created is None
                                               or created >= started - CLOCK_SKEW_S)):
                out.results.append(Result(batch.rows[p], record.id, "created"))
                out.ids[(self.spec.object_name, prop, batch.keys[p])] = record.id
            else:
                foreign.append((p, record.id))
        if foreign and self.spec.on_conflict == "update":
            out.merge(await self._update_existing(batch, foreign))
        else:
            out.rejects += [Reject(batch.rows[p], prop, "CONFLICT",
                                   f"a record with {prop}={batch.keys[p]!r} already exists "
                                   f"(Existing ID: {rid}); with on_conflict 'update' it is "
                                   "updated instead", batch.keys[p]) for p, rid in foreign]
        return out

    async def _update_existing(self, batch: Batch, targets: list[tuple[int, str]]) -> Sent:
        rows = [batch.rows[p] for p, _ in targets]
        inputs = [orjson.dumps({"id": record_id,
                                "properties": orjson.loads(batch.inputs[p])["properties"],
                                "objectWriteTraceId": str(batch.rows[p])}).decode()
                  for p, record_id in targets]
        try:
            response = await self.client.request(
                "POST", object_path(self.spec.object_type, "batch/update"),
                body=encode_body(inputs))
        except ApiError as exc:
            if isinstance(exc, RetryableApiError | FatalApiError):
                raise
            return Sent(rejects=[reject_from(r, exc.status, exc.category, exc.message,
                                             exc.errors) for r in rows])
        answer = _UPDATE.decode(response.body) if response.body else BatchAnswer()
        by_id = {rid: p for p, (_, rid) in enumerate(targets)}
        out = Sent()
        for result in answer.results:
            where = by_id.get(result.id)
            if where is not None:
                out.results.append(Result(rows[where], result.id, "updated"))
        done = {r[0] for r in out.results}
        out.rejects += [Reject(r, "", "NO_RESULT", "the update of the existing record "
                               "returned no result") for r in rows if r not in done]
        return out


async def ensure_import_key(client: HubSpotClient, spec: ImportSpec,
                            schema: Schema) -> str | None:
    """Create the import-key property (unique values) if missing; returns a note if made."""
    name = spec.import_key
    existing = schema.get(name)
    if existing is not None:
        if not existing.unique:
            raise ConfigError(f"property {name!r} exists on {spec.object_type} but without "
                              "unique values; give id_property or another import_key")
        return None
    obj = spec.object_type
    group = GROUPS.get(obj.name or "", f"{obj.name or 'object'}information")
    body = {"name": name, "label": "hsbulk import key", "type": "string",
            "fieldType": "text", "groupName": group, "hasUniqueValue": True,
            "description": "Set by hsbulk so that a retried create can never duplicate."}
    try:
        await client.post_json(f"/crm/v3/properties/{obj.path_name}", body)
    except ApiError as exc:
        if exc.status == 400:  # e.g. notes, products: HubSpot allows no unique property
            raise ConfigError(f"cannot create the unique property {name!r} on {obj} "
                              f"({exc.message}); hsbulk needs one to create records exactly "
                              "once, so this object cannot be imported in create mode"
                              ) from None
        if exc.status != 409:
            raise
    message = (f"created unique property {name!r} on {obj} so that retried creates "
               "cannot duplicate records")
    log.info("%s", message)
    return message


def _epoch_s(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
