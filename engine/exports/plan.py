"""The id-range planner: which `hs_object_id` range each reader reads next.

The planner is pure (no I/O, no awaits); `SplitLog` journals the splits it decides. A full export
starts as one range over the whole id space owned by the list cursor, which starts reading
it upwards at once; once the probes have found where the ids end (`Planner.bound`), each
search reader cuts a piece off the top of the largest range still open, reads it, and
cuts the next, so the two budgets meet in the middle and stay busy until the end.
When the list cursor reaches a piece a search reader has not finished (a slow search),
it takes the piece's unread part and reads on, from where it gets before the reader's
next page would land: a search reader never holds ids the list cursor would read sooner.
An incremental export starts as equal search ranges; an archived one as one list range
over the whole id space.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import anyio

from engine.journal import ExportJournal, ExportRange, JournalThread

ID_SPACE_END = 2**62
PlannedRange = tuple[str, int, int]  # kind (list | search), lo, hi
FIRST_PIECE_PAGES = 5  # a piece cut before the readers' speeds are known, in search pages
PIECE_S = 10.0  # at most this long for its reader to read a piece, at the measured speeds


@dataclass(slots=True)
class IdRange:
    """An open `hs_object_id` range [lo, hi) and how far its reader has got."""

    id: int
    kind: str  # list | search
    lo: int
    hi: int
    cursor: int | None  # last id read (buffered or written)
    after: str | None  # the list cursor's paging token after `cursor`
    owned: bool = False
    closing: bool = False  # its reader has seen its end: never split it again
    ordered: bool = True  # list ranges: the list came back in ascending id order
    page_since: float | None = None  # search ranges: when the page in flight was asked for

    @classmethod
    def of(cls, r: ExportRange) -> IdRange:
        return cls(r.id, r.kind, r.lo, r.hi, r.cursor, r.after)

    @property
    def start(self) -> int:
        return self.lo if self.cursor is None else self.cursor + 1

    @property
    def remaining(self) -> int:
        return max(0, self.hi - self.start)


@dataclass(frozen=True, slots=True)
class Cut:
    """A split the planner made: `victim` keeps [lo, mid), the new range `new_id` [mid, hi),
    read by `kind` (a list range from the list cursor's paging token `after`)."""

    victim: int
    mid: int
    new_id: int
    kind: str  # list | search
    after: str | None = None


def incremental_ranges(lo: int, hi: int, partitions: int) -> list[PlannedRange]:
    """The ranges an incremental export starts with over the ids [lo, hi): equal search
    ranges (a full export starts as one list range over the whole id space)."""
    pieces = max(1, partitions)
    width = max(1, -(-(hi - lo) // pieces))
    bounds = [(lo + i * width, min(hi, lo + (i + 1) * width)) for i in range(pieces)]
    return [("search", a, b) for a, b in bounds if a < b]


class Planner:
    """Which range each reader reads next; splits the largest range for an idle reader.

    A split is decided in one synchronous step, so no reader sees half of it; the runner
    journals the `Cut` (`pop_cut`) before the new range is read. A range is split only
    above the last id its reader has read, and the reader drops ids at or above its (new)
    upper bound, so each id has one reader.

    Pieces are sized by measured speeds so that every reader ends at about the same time:
    a search reader gets the search budget shared by all of them (a few hundred records/s
    under 5 calls/s), so a piece cut near the end must be small enough for it to finish
    before the cursor it was cut from would have got there.
    """

    def __init__(self, ranges: Iterable[IdRange], *, next_id: int,
                 chunk_ids: int = 4_000, min_split: int = 1_000, readers: int = 1,
                 page_ids: int = 200,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ranges = list(ranges)
        self.next_id = next_id  # the id of the next range a split makes
        self.readers = readers
        self.chunk_ids = max(chunk_ids, min_split)
        self.min_split = min_split
        self.page_ids = max(1, page_ids)  # ids one search page covers
        self.splits = 0
        self.steals = 0  # unread parts of search ranges the list cursor took
        self.clock = clock
        self.started = clock()
        self.read_by = {"list": 0, "search": 0}
        self.page_s: float | None = None  # how long a search page takes (limiter included)

    def __repr__(self) -> str:
        return (f"Planner(ranges={len(self.ranges)}, splits={self.splits}, "
                f"steals={self.steals}, read_by={self.read_by})")

    def count(self, kind: str, records: int) -> None:
        """A reader of `kind` read `records` more records (feeds the speed estimates)."""
        self.read_by[kind] += records

    def paged(self, took_s: float) -> None:
        """A search page came back `took_s` after it was asked for (a moving average)."""
        self.page_s = took_s if self.page_s is None else 0.7 * self.page_s + 0.3 * took_s

    def bound(self, end: int, *, chunk_ids: int, page_ids: int) -> list[tuple[int, int]]:
        """The probes found where the ids end: no range reaches past `end` any more (nor
        below what its reader has read), and pieces are sized for the ids' density.
        Returns the (range id, new hi) to journal."""
        self.chunk_ids = max(chunk_ids, self.min_split)
        self.page_ids = max(1, page_ids)
        ends = []
        for r in self.ranges:
            if r.hi > end:
                r.hi = max(end, r.start)
                ends.append((r.id, r.hi))
        return ends

    def speeds(self) -> tuple[float, float] | None:
        """Records/s of the list cursor and of all search readers, once measurable."""
        elapsed = self.clock() - self.started
        if elapsed < 2.0 or not self.read_by["search"]:
            return None
        return self.read_by["list"] / elapsed, self.read_by["search"] / elapsed

    def piece(self, victim: IdRange) -> int:
        """How many ids an idle search reader should cut from the top of `victim` (0: none)."""
        remaining = victim.remaining
        # Speeds unknown: a few pages (fewer when pages are slow), so that a slow search
        # holds little of the top.
        pages = FIRST_PIECE_PAGES if self.page_s is None else max(
            1, min(FIRST_PIECE_PAGES, int(PIECE_S / max(self.page_s, 1e-3))))
        share = min(remaining // (2 * (self.readers + 1)), pages * self.page_ids)
        floor = min(self.min_split, pages * self.page_ids)
        speeds = self.speeds()
        if speeds is not None:
            list_rate, search_rate = speeds
            reading = sum(1 for r in self.ranges if r.kind == "search" and r.owned)
            per_reader = search_rate / (reading + 1)  # the budget shared once this one joins
            owner = list_rate if victim.kind == "list" else per_reader
            if self.page_s is not None and remaining < owner * self.page_s:
                return 0  # the victim's reader gets to its end before a page would land
            # Both ends finish together if the piece takes its reader no longer than the
            # rest of the victim takes everyone else; and no piece takes long: what a
            # reader holds when the list cursor passes it is read twice.
            share = min(int(remaining * per_reader / (owner + search_rate + per_reader)),
                        int(per_reader * PIECE_S))
            floor = self.page_ids
            if share < floor // 2:
                return 0
        if remaining < 2 * floor:
            return 0
        size = min(self.chunk_ids, max(floor, share), remaining // 2)
        # Whole search pages: a piece's last page is then full too (ids are dense).
        return size - size % self.page_ids if size > self.page_ids else size

    def take_list_range(self) -> IdRange | None:
        for r in self.ranges:
            if r.kind == "list" and not r.owned:
                r.owned = True
                return r
        return None

    def take_search_range(self) -> tuple[IdRange, Cut | None] | None:
        """A free search range, else a piece cut from the top of the largest range (with
        the `Cut` to journal before reading it); None when nothing is left to take.

        The list cursor can only move up from where it is and can never be given another
        range, so search readers eat its range from the top in pieces of about
        `chunk_ids` ids (half of what is left near the end) and the two meet in the
        middle: the list cursor stays busy until the very end.
        """
        free = [r for r in self.ranges if r.kind == "search" and not r.owned]
        if free:
            best = max(free, key=lambda r: r.remaining)
            best.owned = True
            return best, None
        busy = [r for r in self.ranges if not r.closing and r.ordered and r.remaining > 1]
        if not busy:
            return None
        victim = max(busy, key=lambda r: r.remaining)
        size = self.piece(victim)
        if not size:
            return None
        self.splits += 1
        return self._cut(victim, victim.hi - size, "search", None)

    def _cut(self, victim: IdRange, mid: int, kind: str, after: str | None
             ) -> tuple[IdRange, Cut]:
        """Cut `victim` at `mid`: it keeps [lo, mid), a new range of `kind` takes the top."""
        cut = Cut(victim.id, mid, self.next_id, kind, after)
        self.next_id += 1
        new = IdRange(cut.new_id, kind, cut.mid, victim.hi, None, after, owned=True)
        victim.hi = cut.mid
        self.ranges.append(new)
        return new, cut

    def take_unread_above(self, r: IdRange, after: str | None = None
                          ) -> tuple[IdRange, Cut] | None:
        """The list cursor has read its range `r` to the end and reads on upwards: it takes
        the top [mid, hi) of the next range above that it reaches before that range's
        search reader would (with the `Cut` to journal before reading it). The range
        keeps [lo, mid), read or still to be read by its reader, which drops any ids of a
        page in flight at or above `mid`. The list cursor pages over every id below `mid`
        (read by others) and keeps none. `after`: the paging token the list cursor asked
        its current page with, where a resumed export reads the new range from. None: no
        range above is worth taking."""
        above = sorted((x for x in self.ranges if x is not r and x.lo >= r.hi),
                       key=lambda x: x.lo)
        for victim in above:
            if victim.closing or not victim.ordered or victim.remaining == 0:
                continue
            mid = self.meeting_point(r.hi, victim)
            if mid is None or mid >= victim.hi:
                continue
            self.steals += 1
            return self._cut(victim, mid, "list", after)
        return None

    def meeting_point(self, at: int, victim: IdRange) -> int | None:
        """Where the list cursor, paging upwards from `at`, meets `victim`'s search reader
        reading upwards from its start (ids are about evenly dense); the unread start
        itself when the victim has no reader, no speeds are known yet, or the reader's
        page in flight would land after the list cursor got there; None when the list
        cursor never catches up."""
        speeds = self.speeds()
        if not victim.owned or speeds is None:
            return victim.start
        list_rate, search_rate = speeds
        reading = sum(1 for x in self.ranges if x.kind == "search" and x.owned)
        per_reader = search_rate / max(1, reading)
        if per_reader >= list_rate:
            return None
        if victim.page_since is not None and self.page_s is not None:
            lands_s = victim.page_since + self.page_s - self.clock()
            if lands_s > (victim.start - at) / list_rate:
                return victim.start
        meet = (victim.start * list_rate - at * per_reader) / (list_rate - per_reader)
        return max(victim.start, math.ceil(meet))

    def finished(self, r: IdRange) -> None:
        self.ranges.remove(r)


class SplitLog:
    """Splits on their way into the journal: a range is closed in the journal only once
    every piece cut from it is journaled, so a crash never leaves a closed range whose
    top no range holds."""

    def __init__(self, journal: ExportJournal, thread: JournalThread) -> None:
        self.journal = journal
        self.thread = thread
        self.pending: dict[int, int] = {}  # victim range id -> splits not yet journaled
        self.changed = anyio.Event()

    def __repr__(self) -> str:
        return f"SplitLog(pending={self.pending})"

    async def record(self, cut: Cut) -> None:
        self.pending[cut.victim] = self.pending.get(cut.victim, 0) + 1
        try:
            await self.thread.call(self.journal.split, cut.victim, cut.mid, cut.new_id,
                                   cut.kind, cut.after)
        finally:
            self.pending[cut.victim] -= 1
            self.changed.set()
            self.changed = anyio.Event()

    async def settle(self, r: IdRange) -> None:
        while self.pending.get(r.id):
            await self.changed.wait()
