"""Association edges: read by v4 batch read and written as edge tables.

Edges are read per record part (1,000 ids a call, following per-record paging) into an
edge part with the same number (`OBJECT__TO/part-NNNNN`: from_id, to_id, type_id,
category, label), journaled on its own. Reads start as soon as a page of records is in
(`EdgesAhead`), so a part's edges are in hand when the part is written and no reads trail
the export; a resumed export reads the edges of record parts whose edge parts are missing
(`backlog`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import polars as pl

from engine.client import HubSpotClient
from engine.exports.parts import Format, write_part
from engine.journal import ExportJournal, ExportPart, JournalThread
from engine.schema import ObjectType

ASSOCIATION_READ_INPUTS = 1_000
EdgeRow = tuple[int, int, int, str | None, str | None]
EdgeRows = dict[str, list[EdgeRow]]  # edge dataset -> rows
EdgeItem = tuple[int, list[int], EdgeRows | None]  # part, ids, rows read ahead
EDGE_SCHEMA: dict[str, pl.DataType] = {
    "from_id": pl.Int64(), "to_id": pl.Int64(), "type_id": pl.Int64(),
    "category": pl.String(), "label": pl.String()}


def edge_dataset(obj: ObjectType, target: ObjectType) -> str:
    return f"{obj}__{target}"


class EdgeReader:
    """Every edge of some records to one object type, following each record's paging."""

    def __init__(self, client: HubSpotClient, obj: ObjectType) -> None:
        self.client = client
        self.obj = obj
        self.calls = 0

    def __repr__(self) -> str:
        return f"EdgeReader({self.obj}, calls={self.calls})"

    async def read(self, ids: Sequence[int], target: ObjectType) -> list[EdgeRow]:
        rows: list[EdgeRow] = []
        path = f"/crm/v4/associations/{self.obj.path_name}/{target.path_name}/batch/read"
        pending: list[dict[str, str]] = [{"id": str(i)} for i in ids]
        slots = anyio.CapacityLimiter(4)
        while pending:
            follow: list[dict[str, str]] = []
            async with anyio.create_task_group() as tg:
                for start in range(0, len(pending), ASSOCIATION_READ_INPUTS):
                    chunk = pending[start : start + ASSOCIATION_READ_INPUTS]
                    tg.start_soon(self._read_chunk, path, chunk, slots, rows, follow)
            pending = follow
        return rows

    async def _read_chunk(self, path: str, chunk: list[dict[str, str]],
                          slots: anyio.CapacityLimiter, rows: list[EdgeRow],
                          follow: list[dict[str, str]]) -> None:
        async with slots:
            answer = (await self.client.post_json(path, {"inputs": chunk})).json()
        self.calls += 1
        for item in answer.get("results") or []:
            from_id = int(item["from"]["id"])
            rows.extend((from_id, int(to["toObjectId"]), int(kind["typeId"]),
                         kind.get("category"), kind.get("label"))
                        for to in item.get("to") or []
                        for kind in to.get("associationTypes") or [])
            after = ((item.get("paging") or {}).get("next") or {}).get("after")
            if after:
                follow.append({"id": str(from_id), "after": str(after)})


@dataclass(slots=True)
class EdgesAhead:
    """The edges of one range's buffered records, read while the range is still read.

    Without association targets (`pipeline` None) it holds nothing."""

    pipeline: EdgePipeline | None
    ids: list[int] = field(default_factory=list)  # not yet asked for
    rows: EdgeRows = field(default_factory=dict)
    pending: int = 0  # reads in flight
    settled: anyio.Event = field(default_factory=anyio.Event)

    def add(self, ids: list[int], *, all_ids: bool = False) -> None:
        """Start reading the edges of records just read, a full batch read at a time."""
        if self.pipeline is None:
            return
        self.ids.extend(ids)
        while len(self.ids) >= ASSOCIATION_READ_INPUTS or (all_ids and self.ids):
            chunk = self.ids[:ASSOCIATION_READ_INPUTS]
            del self.ids[:ASSOCIATION_READ_INPUTS]
            for target in self.pipeline.targets:
                if not self.pending:
                    self.settled = anyio.Event()
                self.pending += 1
                self.pipeline.start_read(self._read, chunk, target)

    async def _read(self, ids: list[int], target: ObjectType) -> None:
        assert self.pipeline is not None
        rows = await self.pipeline.reader.read(ids, target)
        self.rows.setdefault(self.pipeline.dataset(target), []).extend(rows)
        self.pending -= 1
        if not self.pending:
            self.settled.set()

    async def collect(self) -> EdgeRows | None:
        """The edges of every record added so far; None without association targets."""
        if self.pipeline is None:
            return None
        self.add([], all_ids=True)
        if self.pending:
            await self.settled.wait()
        rows, self.rows = self.rows, {}
        return rows


class EdgePipeline:
    """Edge reads and edge part writes of one export, run in the export's task group.

    `open(tg)` starts the edge writers; `send` hands them a record part (its ids and the
    edges read ahead); `aclose` tells them that no part follows."""

    def __init__(self, reader: EdgeReader, targets: Sequence[ObjectType], out_dir: Path,
                 fmt: Format, journal: ExportJournal, thread: JournalThread) -> None:
        self.reader = reader
        self.targets = list(targets)
        self.out_dir = out_dir
        self.fmt = fmt
        self.journal = journal
        self.thread = thread
        self._tg: anyio.abc.TaskGroup | None = None
        self._send: anyio.abc.ObjectSendStream[EdgeItem] | None = None

    def __repr__(self) -> str:
        return f"EdgePipeline(targets={[str(t) for t in self.targets]}, open={bool(self._tg)})"

    def dataset(self, target: ObjectType) -> str:
        return edge_dataset(self.reader.obj, target)

    def ahead(self) -> EdgesAhead:
        return EdgesAhead(self if self._tg is not None else None)

    def start_read(self, read: Callable[[list[int], ObjectType], Coroutine[Any, Any, None]],
                   ids: list[int], target: ObjectType) -> None:
        """Run `read(ids, target)` in the export's task group (a read-ahead)."""
        assert self._tg is not None
        self._tg.start_soon(read, ids, target)

    def open(self, tg: anyio.abc.TaskGroup, writers: int = 2) -> None:
        if not self.targets:
            return
        send, receive = anyio.create_memory_object_stream[EdgeItem](4)
        self._tg, self._send = tg, send
        with receive:
            for _ in range(writers):
                tg.start_soon(self._write_parts, receive.clone())

    async def send(self, part_no: int, ids: list[int], edges: EdgeRows | None) -> None:
        if self._send is not None:
            await self._send.send((part_no, ids, edges))

    async def aclose(self) -> None:
        if self._send is not None:
            await self._send.aclose()

    async def _write_parts(self, receive: anyio.abc.ObjectReceiveStream[EdgeItem]) -> None:
        async with receive:
            async for part_no, ids, edges in receive:
                for target in self.targets:
                    dataset = self.dataset(target)
                    rows = (edges.get(dataset, []) if edges is not None
                            else await self.reader.read(ids, target))
                    await self._write(part_no, dataset, rows)

    async def _write(self, part_no: int, dataset: str, rows: list[EdgeRow]) -> None:
        relative: str | None = None
        if rows:
            relative = f"{dataset}/part-{part_no:05d}.{self.fmt}"
            frame = pl.DataFrame(rows, schema=EDGE_SCHEMA, orient="row")
            await anyio.to_thread.run_sync(write_part, self.out_dir / relative, frame,
                                           self.fmt)
        part = ExportPart(dataset, part_no, None, relative, len(rows), None)
        await self.thread.call(self.journal.add_part, part)

    def backlog(self, parts: Sequence[ExportPart], edge_parts: Sequence[ExportPart]
                ) -> list[ExportPart]:
        """Record parts of an earlier run whose edge parts were not all written."""
        if not self.targets:
            return []
        done: dict[int, int] = {}
        for p in edge_parts:
            done[p.part] = done.get(p.part, 0) + 1
        return [p for p in parts if done.get(p.part, 0) < len(self.targets) and p.path]
