"""The readers of an export: the list cursor and the search readers.

* The list endpoint (`GET /crm/v3/objects/{type}`, 100 per page) counts against the
  rolling 10-second window and is one sequential cursor that can only start at the
  beginning of the id space. It keeps one page in flight ahead of the one being decoded.
  The list returns records in ascending id order (the sandbox does, and HubSpot does in
  practice; the documentation promises nothing): the reader checks it on every page and
  stops at its range's (shrinking) upper bound. Should the list ever go backwards, the
  reader stops trusting the order: it reads the list to its end keeping only its own
  range's ids (each id still lands in exactly one range) and its range is no longer cut.
* Search (`POST .../search`, 200 per page) has its own ~5/s limit, outside the window,
  and can read any `hs_object_id` range: sorted by id, filtered `BETWEEN start AND hi-1`,
  and continued from the last id read, so no query ever meets the 10,000-result cap.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import orjson

from engine.client import HubSpotClient
from engine.errors import EngineError
from engine.exports.parts import PartBuffer, PartWriter, decode_page
from engine.exports.plan import IdRange, Planner, SplitLog
from engine.schema import ObjectType

log = logging.getLogger("hsbulk.export")

LIST_PAGE = 100
# HubSpot refuses list URLs past about 8 KB (414 URI Too Long) and a portal's objects carry
# hundreds of properties: past this many characters of names the list cursor asks for ids
# only and reads the properties of each page by batch read (names in the body).
LIST_URL_PROPERTIES_MAX = 6_000
SEARCH_PAGE = 200


@dataclass(frozen=True, slots=True)
class ReadTarget:
    """What the readers ask for: which object, which properties, which records."""

    client: HubSpotClient
    obj: ObjectType
    names: tuple[str, ...]
    filters: tuple[dict[str, str], ...] = ()  # the incremental export's `GTE` filter
    archived: bool = False
    rows_per_part: int = 50_000

    @property
    def search_path(self) -> str:
        return f"/crm/v3/objects/{self.obj.path_name}/search"

    async def probe(self, *, ascending: bool) -> tuple[int | None, int]:
        """The lowest (or highest) id of the records to read, and how many there are."""
        body: dict[str, Any] = {
            "sorts": [{"propertyName": "hs_object_id",
                       "direction": "ASCENDING" if ascending else "DESCENDING"}],
            "properties": ["hs_object_id"], "limit": 1}
        if self.filters:
            body["filterGroups"] = [{"filters": list(self.filters)}]
        data = (await self.client.post_json(self.search_path, body, search=True)).json()
        results = data.get("results") or []
        return (int(results[0]["id"]) if results else None), int(data.get("total") or 0)


@dataclass(frozen=True, slots=True)
class Reading:
    """What every reader shares: the target, the planner, the part writer."""

    target: ReadTarget
    planner: Planner
    writer: PartWriter
    splits: SplitLog
    report: Callable[[], None]
    # range id -> the scope of its search page in flight (cancelled once it is not needed)
    pages_out: dict[int, anyio.CancelScope] = field(default_factory=dict)
    # set once the planner knows where the ids end: search readers cut pieces from then on
    bounded: anyio.Event = field(default_factory=anyio.Event)

    async def close(self, r: IdRange) -> None:
        """`r`'s reader has seen its end: no more splits; wait for those on their way."""
        r.closing = True
        await self.splits.settle(r)


class SearchReader:
    """Takes a range (or cuts one) from the planner, reads it by search, and again."""

    def __init__(self, reading: Reading) -> None:
        self.reading = reading

    async def run(self) -> None:
        planner = self.reading.planner
        await self.reading.bounded.wait()
        while (taken := planner.take_search_range()) is not None:
            r, cut = taken
            if cut is not None:
                await self.reading.splits.record(cut)
            await self.read_range(r)
            planner.finished(r)

    async def read_range(self, r: IdRange) -> None:
        reading = self.reading
        buffer = reading.writer.buffer()
        while True:
            start = r.start
            done = start >= r.hi
            if not done:
                results = await self.page_of(r, start)
                ids = [int(x["id"]) for x in results]
                hi = r.hi  # may have shrunk while the call was out
                kept = sum(1 for i in ids if i < hi)
                done = len(results) < SEARCH_PAGE or kept < len(results)
                if kept:
                    buffer.add(decode_page(results[:kept], reading.target.names))
                    r.cursor = ids[kept - 1]
                    reading.planner.count("search", kept)
            if done:
                await reading.close(r)
            if done or buffer.rows >= reading.target.rows_per_part:
                await reading.writer.flush(r, buffer, done)
            reading.report()
            if done:
                return

    async def page_of(self, r: IdRange, start: int) -> list[dict[str, Any]]:
        """`r`'s next page, timed for the planner; none when the list cursor took every
        id it could hold while it was out (the page is then called off)."""
        reading, planner = self.reading, self.reading.planner
        r.page_since = sent = planner.clock()
        with anyio.CancelScope() as scope:
            reading.pages_out[r.id] = scope
            try:
                results = await self.page(start, r.hi)
            finally:
                del reading.pages_out[r.id]
                r.page_since = None
        if scope.cancelled_caught:
            return []
        planner.paged(planner.clock() - sent)
        return results

    async def page(self, start: int, hi: int) -> list[dict[str, Any]]:
        """Up to a page of records with ids in [start, hi), in ascending id order."""
        target = self.reading.target
        body = {
            "filterGroups": [{"filters": [
                {"propertyName": "hs_object_id", "operator": "BETWEEN",
                 "value": str(start), "highValue": str(hi - 1)}, *target.filters]}],
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            "properties": list(target.names), "limit": SEARCH_PAGE}
        data = (await target.client.post_json(target.search_path, body, search=True)).json()
        results: list[dict[str, Any]] = data.get("results") or []
        ids = [int(x["id"]) for x in results]
        if any(b <= a for a, b in itertools.pairwise(ids)) or (ids and ids[0] < start):
            raise EngineError(f"search on {target.obj} did not return ids in ascending "
                              "order from the requested bound; cannot page safely")
        return results


@dataclass(slots=True)
class _Page:
    """One list page; `ready` (when set) is the wait for its properties' batch read."""

    data: dict[str, Any]
    asked: str | None  # the paging token it was asked with
    ready: anyio.Event | None = None


class ListReader:
    """The list cursor: one page ahead in flight while the last one is decoded, so the
    sequential cursor runs at the speed of the network alone."""

    def __init__(self, reading: Reading) -> None:
        self.reading = reading
        self.calls = 0
        self.notes: list[str] = []

    async def run(self, r: IdRange) -> None:
        pages, receive = anyio.create_memory_object_stream[_Page](1)
        with receive:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._fetch_pages, r.after, pages)
                try:
                    r = await self._read_pages(r, receive)
                finally:
                    tg.cancel_scope.cancel()  # a page fetched past the end is not needed
        self.reading.planner.finished(r)

    async def _fetch_pages(self, after: str | None,
                           pages: anyio.abc.ObjectSendStream[_Page]) -> None:
        target = self.reading.target
        path = f"/crm/v3/objects/{target.obj.path_name}"
        props = ",".join(target.names)
        wide = len(props) > LIST_URL_PROPERTIES_MAX
        async with pages, anyio.create_task_group() as reads:
            while True:
                params: dict[str, str | int] = {
                    "limit": LIST_PAGE, "properties": "hs_object_id" if wide else props,
                    "archived": "true" if target.archived else "false"}
                if after is not None:
                    params["after"] = after
                asked = after
                data = await target.client.get_json(path, params)
                self.calls += 1
                page = _Page(data, asked)
                if wide:
                    page.ready = anyio.Event()
                    reads.start_soon(self._read_properties, page)
                await pages.send(page)
                after = ((data.get("paging") or {}).get("next") or {}).get("after")
                if after is None:
                    return
                after = str(after)

    async def _read_properties(self, page: _Page) -> None:
        """Replace a page of bare ids by the same records, in the same order, with every
        property (a record archived in between is left out, as a later list would)."""
        assert page.ready is not None
        target = self.reading.target
        ids = [str(r["id"]) for r in page.data.get("results") or ()]
        if ids:
            body = orjson.dumps({"properties": list(target.names),
                                 "inputs": [{"id": i} for i in ids]})
            answer = await target.client.request(
                "POST", f"/crm/v3/objects/{target.obj.path_name}/batch/read", body=body,
                params={"archived": "true"} if target.archived else None)
            self.calls += 1
            found = {str(r["id"]): r for r in (answer.json() or {}).get("results") or ()}
            page.data["results"] = [found[i] for i in ids if i in found]
        page.ready.set()

    def _check_order(self, r: IdRange, ids: list[int], last_seen: int) -> None:
        if (r.ordered and any(i <= last_seen for i in ids)) or any(
                b <= a for a, b in itertools.pairwise(ids)):
            if r.ordered:
                log.warning("the list of %s is not in id order: reading it to the end",
                            self.reading.target.obj)
                self.notes.append("list not in id order: list cursor read to the end")
            r.ordered = False

    async def _read_pages(self, r: IdRange,
                          pages: anyio.abc.ObjectReceiveStream[_Page]) -> IdRange:
        """Read pages into `r` and, past its end, into the unread parts the list cursor
        takes above it; returns the last range read."""
        buffer = self.reading.writer.buffer()
        last_seen = r.cursor if r.cursor is not None else -1
        while True:
            page = await pages.receive()
            if page.ready is not None:
                await page.ready.wait()
            results: list[dict[str, Any]] = page.data.get("results") or []
            ids = [int(x["id"]) for x in results]
            self._check_order(r, ids, last_seen)
            last_seen = max([last_seen, *ids])
            after = ((page.data.get("paging") or {}).get("next") or {}).get("after")
            r.after = None if after is None else str(after)
            while await self._settle_page(r, buffer, results, ids):
                if r.after is None or not r.ordered:
                    return r
                taken = await self._take_unread_above(r, page.asked)
                if taken is None:
                    return r
                taken.after = r.after  # the journal keeps `page.asked` until it flushes
                self.reading.planner.finished(r)
                r, buffer = taken, self.reading.writer.buffer()

    async def _settle_page(self, r: IdRange, buffer: PartBuffer,
                           results: list[dict[str, Any]], ids: list[int]) -> bool:
        """Buffer the page's records of `r` (writing a part when due); True when the page
        reached `r`'s end (then `r` is closed and written)."""
        reading = self.reading
        lo, hi = r.lo, r.hi
        keep = [i for i, x in enumerate(ids) if lo <= x < hi]
        done = r.after is None or (r.ordered and any(x >= hi for x in ids))
        if keep:
            buffer.add(decode_page([results[i] for i in keep], reading.target.names))
            if r.ordered:
                r.cursor = ids[keep[-1]]
            reading.planner.count("list", len(keep))
        if done:
            await reading.close(r)
        if done or buffer.rows >= reading.target.rows_per_part:
            await reading.writer.flush(r, buffer, done, list_cursor=True)
        reading.report()
        return done

    async def _take_unread_above(self, r: IdRange, asked: str | None) -> IdRange | None:
        """The unread part of the next range above `r`, journaled before it is read (with
        `asked`, the token of the page being read: a resumed export reads it again)."""
        taken = self.reading.planner.take_unread_above(r, asked)
        if taken is None:
            return None
        new, cut = taken
        reading = self.reading
        victim = next(x for x in reading.planner.ranges if x.id == cut.victim)
        orphan, victim.owned = not victim.owned, True  # no reader holds it (a resumed run's)
        out = reading.pages_out.get(cut.victim)
        if out is not None and victim.remaining == 0:  # its page would hold none of its ids
            out.cancel()
        await reading.splits.record(cut)
        if orphan:  # what is left of it was read by an earlier run: close it
            await reading.close(victim)
            await reading.writer.flush(victim, reading.writer.buffer(), True)
            reading.planner.finished(victim)
        return new
