"""HubSpot's rolling window, kept from the client side.

Guarantee: the server never sees more than `requests` arrivals in any `window_s`
interval, whatever the network and scheduling jitter. The server counts a request when
it arrives, and a request arrives after we send it and before its answer comes back. So
a request counts against our log from the moment it is sent until `window_s` after its
answer (or failure) came back: a new request may leave only when fewer than `requests`
others are in that state. Measured on a loaded 2-core machine, logging send times alone
(with a 2% margin) still drew 429s: a request delayed between the limiter and the socket
arrives late and shares a server window with one sent a full window after it. Counting to
one window after the answer needs no margin on top (a request arrived before its answer
came back, so one sent a window later arrives more than a window after it); a margin
only idles the quota (2% margin: 96.0% of 190/10s used at 150 ms jittered latency; none:
98.5%, `engine.bench.steady_share`). The steady share is thus bounded by W/(W + L), L
the mean latency the client sees (98.50% at 152 ms). What is left cannot be won back from
the server's `X-HubSpot-RateLimit-Remaining`: that count is as old as the answer's
latency, so it never shows the expiries the log waits for; it serves to notice other
clients (below).

Rate-limit headers describe one policy: a limiter reads only those of its own interval.
The search limiter (about 5/s, exempt from the 10-second window) never takes up another
window a server declares (`follows_server=False`); the API limiter adopts a declared
window that allows fewer requests per second than its own.

A leaky bucket that starts full (aiolimiter's `AsyncLimiter(R, W)`) lets about 2R through
in the first window. A no-burst pacer in front of the accounting (`AsyncLimiter(1, W/R)`)
was measured and left out (benchmarks/bench_ratelimit.py, 190/10s, 150 ms jittered latency,
1,500 calls, zero 429s either way): it lifts the steady share of the quota only from 96.0%
to 96.6% but gives up the first window's burst, so whole runs take longer (1,500 calls:
81.8 s instead of 74.4 s; 1,000 calls at 100/2s: 46.9 calls/s, under 95% of the rate).

The limit adapts (AIMD): a 429 or a server that reports less remaining budget than our
own log explains (another client shares the app) cuts the limit; it then recovers
linearly to the configured one over `recover_windows` clean windows. The schedule is
arithmetic over an injected clock; `acquire()` only sleeps until the computed slot.
"""

from __future__ import annotations

import bisect
import heapq
import math
import time
from collections.abc import Mapping
from typing import NamedTuple, Protocol

import anyio
import anyio.lowlevel

from engine.errors import QuotaExhausted


def first_window_in_flight(concurrency: int) -> int:
    """Requests in flight at most during the first window: three quarters of the workers.

    Every later window replays the first (a slot frees a window after its answer). A first
    window sent with every worker busy frees its slots, a window on, exactly as fast as the
    workers come back, so with jittered latency some slot waits for a worker and the
    rhythm slips a little each window. With a quarter of the workers spare the slots find
    one free. Measured with `hsbulk bench` (190/10s, 150 ms jittered latency, 1,500 calls,
    steady share of the limit against the bound W/(W + mean latency)): 16 workers 98.41%
    against 98.49% without the cap, 98.49% against 98.49% with it (the run 0.4 s longer);
    8 workers 98.47% against 98.49%; 64 workers without a cap reach the bound too.
    """
    return max(1, concurrency - concurrency // 4)


TIMER_EARLY_S = 0.001  # a loop's timers round to the millisecond


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class AnyioClock:
    """A monotonic clock, and the event loop's sleep (only differences of `now` are used).

    `time.monotonic` rather than `anyio.current_time`, which looks up the running async
    library on every call: twice per request on the hot path."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds`, ending on time: a loop's timer fires late (uvloop's by 0.5 ms
        on average, asyncio's by 0.9 ms, measured here), and every slot the limiter waits
        for would start that late. So the timer is set `TIMER_EARLY_S` early and the rest
        is spent yielding to the loop (at 190/10s, under 2% of a core)."""
        deadline = time.monotonic() + seconds
        if seconds > TIMER_EARLY_S:
            await anyio.sleep(seconds - TIMER_EARLY_S)
        else:
            await anyio.lowlevel.checkpoint()  # a sleep is always a checkpoint
        while time.monotonic() < deadline:
            await anyio.lowlevel.checkpoint()


class Observation(NamedTuple):
    """The rate-limit headers of one response (absent ones are None)."""

    max: int | None = None
    remaining: int | None = None
    interval_s: float | None = None
    daily: int | None = None
    daily_remaining: int | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Observation:
        def number(name: str) -> int | None:
            value = headers.get(name)
            try:
                return int(value) if value is not None else None
            except ValueError:
                return None

        interval_ms = number("X-HubSpot-RateLimit-Interval-Milliseconds")
        return cls(
            max=number("X-HubSpot-RateLimit-Max"),
            remaining=number("X-HubSpot-RateLimit-Remaining"),
            interval_s=interval_ms / 1000 if interval_ms else None,
            daily=number("X-HubSpot-RateLimit-Daily"),
            daily_remaining=number("X-HubSpot-RateLimit-Daily-Remaining"),
        )


class TimeLog:
    """Ascending times (the clock is monotonic); counts those in `(lo, hi]` and forgets
    those older than any interval still asked about."""

    __slots__ = ("_start", "_times")

    def __init__(self) -> None:
        self._times: list[float] = []
        self._start = 0

    def append(self, at: float, horizon: float) -> None:
        times = self._times
        times.append(at)
        if self._start > 1024 and self._start * 2 > len(times):
            del times[: self._start]
            self._start = 0
        while self._start < len(times) - 1 and times[self._start] < horizon:
            self._start += 1

    def count(self, lo: float, hi: float) -> int:
        return (bisect.bisect_right(self._times, hi, self._start)
                - bisect.bisect_right(self._times, lo, self._start))


class Ticket(NamedTuple):
    """One granted request: pass it back to `complete` when its answer (or error) is in."""

    sent_at: float
    seq: int
    owner: int = 0  # id() of the limiter that granted it


class RollingWindowLimiter:
    """A sliding log of send times shared by every request of a run (one per token)."""

    def __init__(
        self,
        requests: int,
        window_s: float,
        *,
        margin: float = 0.0,
        clock: Clock | None = None,
        daily_reserve: int = 0,
        cut_factor: float = 0.5,
        recover_windows: float = 6.0,
        max_pause_s: float = 60.0,
        name: str = "api",
        follows_server: bool = True,
        first_spread: float = 0.0,
        first_in_flight: int | None = None,
    ) -> None:
        if requests < 1 or window_s <= 0:
            raise ValueError("a limiter needs requests >= 1 and window_s > 0")
        self.name = name
        self.follows_server = follows_server  # False: only headers of our own window count
        self.requests = requests
        self.window_s = window_s
        self.margin = margin
        self.clock: Clock = clock or AnyioClock()
        self.daily_reserve = daily_reserve
        self.cut_factor = cut_factor
        self.recover_windows = recover_windows
        self.max_pause_s = max_pause_s
        self._sent: list[float] = []  # send times, ascending (the clock is monotonic)
        self._answered: list[float] = []  # heap: answer times still inside the window
        self._in_flight = 0
        self._answers = TimeLog()  # answer times, for `observe`
        self._changed = anyio.Event()
        self._start = 0  # entries before this index are older than any window we ask about
        self._sent_total = 0
        self._first_at = -math.inf
        self.first_spread = first_spread
        self.first_in_flight = first_in_flight
        self._floor = float(requests)  # the limit right after the last cut
        self._cut_at = -math.inf
        self._paused_until = -math.inf
        self._daily_remaining: int | None = None
        self._daily_seen_at = 0  # _sent_total when that figure was read
        self._lock = anyio.Lock()
        self.cuts = 0
        self.pauses = 0

    # -- the synchronous core ------------------------------------------------------

    @property
    def span_s(self) -> float:
        """The interval of send times that must hold at most `limit` sends."""
        return self.window_s * (1 + self.margin)

    def limit(self, now: float) -> int:
        """The adapted limit now: the floor after the last cut, recovering linearly."""
        recovered = self._floor + (now - self._cut_at) * self.requests / (
            self.recover_windows * self.window_s
        )
        return max(1, int(min(float(self.requests), recovered)))

    def next_slot(self, now: float) -> float | None:
        """The earliest time a request may be sent; None: when a request in flight ends."""
        slot = max(now, self._paused_until, self.spread_slot(now))
        limit = self.limit(slot)
        horizon = slot - self.span_s
        answered = self._answered
        while answered and answered[0] <= horizon:
            heapq.heappop(answered)
        busy = len(answered) + self._in_flight
        if (self.first_in_flight is not None and self._in_flight >= self.first_in_flight
                and slot < self._first_at + self.window_s):
            return None
        if busy < limit:
            return slot
        expire = busy - limit + 1  # this many answered entries must leave the window
        if expire > len(answered):
            return None
        return heapq.nsmallest(expire, answered)[-1] + self.span_s

    def spread_slot(self, now: float) -> float:
        """The first window's sends are spread over `first_spread` of it (none: -inf).

        The default, 0, keeps the burst: every later window replays it, at the bound
        W/(W + latency) once a quarter of the workers is kept spare in the first window
        (`first_window_in_flight`). Spreading it gives up the first window's head start
        (1,500 calls at 190/10s and 150 ms: 80.4 s instead of 73.7 s) and wins nothing in
        the long run; only a mean of rolling counts over a span that ends on a burst
        reads the spread pattern higher (`engine.bench.steady_share`).
        """
        if not self.first_spread or not self._sent or now >= self._first_at + self.window_s:
            return -math.inf
        return self._sent[-1] + self.first_spread * self.window_s / self.requests

    def count_in_window(self, end: float, span_s: float | None = None) -> int:
        """How many sends fall in `(end - span, end]`."""
        span = self.window_s if span_s is None else span_s
        lo = bisect.bisect_right(self._sent, end - span, self._start)
        hi = bisect.bisect_right(self._sent, end, self._start)
        return hi - lo

    def check_daily_nowait(self) -> None:
        if self._daily_remaining is None:
            return
        left = self._daily_remaining - (self._sent_total - self._daily_seen_at)
        if left <= self.daily_reserve:
            raise QuotaExhausted(
                f"daily API quota: about {max(left, 0)} calls left, at or below the reserve of "
                f"{self.daily_reserve}; run the same command again after the daily reset"
            )

    def record_send_nowait(self, at: float) -> int:
        """Log a send; returns its sequence number (for `observe`)."""
        if not self._sent_total:
            self._first_at = at
        self._sent.append(at)
        self._sent_total += 1
        horizon = at - 2 * self.span_s
        if self._start > 1024 and self._start * 2 > len(self._sent):
            del self._sent[: self._start]
            self._start = 0
        while self._start < len(self._sent) - 1 and self._sent[self._start] < horizon:
            self._start += 1
        return self._sent_total

    def cut_nowait(self, now: float, to: float | None = None) -> None:
        """Multiplicative decrease (or down to `to`), then linear recovery."""
        current = self.limit(now)
        target = current * self.cut_factor if to is None else min(current, to)
        self._floor = max(1.0, target)
        self._cut_at = now
        self.cuts += 1

    def pause_nowait(self, now: float, seconds: float) -> None:
        seconds = min(max(seconds, 0.0), self.max_pause_s)
        self._paused_until = max(self._paused_until, now + seconds)
        self.pauses += 1

    def observe(self, headers: Mapping[str, str], *, sent_at: float, seq: int) -> None:
        """Adapt to the `X-HubSpot-RateLimit-*` headers of a response."""
        seen = Observation.from_headers(headers)
        now = self.clock.now()
        if seen.daily_remaining is not None:
            self._daily_remaining = seen.daily_remaining
            self._daily_seen_at = seq
        if not self.is_own_policy(seen) and not self.adopt_slower_window(seen):
            return
        if seen.max is not None and seen.max < self.requests:
            # The app's real limit is lower than configured: adopt it for good.
            self.requests = seen.max
            self._floor = min(self._floor, float(seen.max))
        if seen.remaining is None:
            return
        server_max = seen.max if seen.max is not None else self.requests
        # The server counted at the request's arrival `a` (sent_at <= a <= now) the requests
        # that arrived in (a - W, a]: of ours, at most those answered after sent_at - W or
        # still in flight. Fewer would take our own reordered or late-read requests (a
        # burst arrives in any order) for another client's and cut the rate for nothing.
        ours_used = self._answers.count(sent_at - self.window_s, now) + self._in_flight
        server_used = server_max - seen.remaining
        tolerance = max(2, self.requests // 20)
        foreign = server_used - ours_used
        if foreign > tolerance:
            # Someone else spends this app's budget: leave room for them.
            self.cut_nowait(now, to=float(self.requests - foreign))

    def is_own_policy(self, seen: Observation) -> bool:
        """Whether headers describe this limiter's window: the same interval (HubSpot always
        sends it with `-Max`; without one the headers are taken as ours). A search limiter
        (5 per 1 s) must not read the 10-second window's figures as its own budget."""
        interval = seen.interval_s
        return interval is None or abs(interval - self.window_s) <= 0.01 * self.window_s

    def adopt_slower_window(self, seen: Observation) -> bool:
        """A limiter that `follows_server` switches to a declared window of another interval
        when it allows fewer requests per second than ours (`--rate 100/1s` against the
        10-second window); True when it did."""
        if not (self.follows_server and seen.max and seen.interval_s):
            return False
        if seen.max / seen.interval_s >= self.requests / self.window_s - 1e-9:
            return False
        self.requests, self.window_s = seen.max, seen.interval_s
        self._floor = min(self._floor, float(seen.max))
        return True

    def on_rate_limited(self, retry_after_s: float | None) -> None:
        """A 429 for this limiter's policy: pause everyone, then cut the rate."""
        now = self.clock.now()
        self.pause_nowait(now, retry_after_s if retry_after_s is not None else 1.0)
        self.cut_nowait(now)

    # -- the async shell ------------------------------------------------------------

    def complete(self, ticket: Ticket) -> None:
        """The request's answer (or failure) is in: from now on it leaves the window."""
        self._in_flight -= 1
        now = self.clock.now()
        heapq.heappush(self._answered, now)
        self._answers.append(now, now - 4 * self.span_s)
        self._changed.set()

    async def acquire(self) -> Ticket:
        """Wait for a slot; pass the ticket to `complete` (and `observe`) afterwards."""
        async with self._lock:
            while True:
                self.check_daily_nowait()
                now = self.clock.now()
                slot = self.next_slot(now)
                if slot is None:
                    self._changed = anyio.Event()
                    await self._changed.wait()
                elif slot <= now:
                    self._in_flight += 1
                    return Ticket(now, self.record_send_nowait(now), id(self))
                else:
                    await self.clock.sleep(slot - now)

    def __repr__(self) -> str:
        now = self.clock.now()
        return (
            f"<{type(self).__name__} {self.name} limit={self.limit(now)}/{self.requests} "
            f"per {self.window_s:g}s in_window={self.count_in_window(now)} "
            f"paused={max(0.0, self._paused_until - now):.2f}s cuts={self.cuts}>"
        )


class Unlimited:
    """No client-side limit of our own (`--rate none`), but the server's word still counts:
    once a response declares the app's window (`X-HubSpot-RateLimit-Max`/`-Interval-
    Milliseconds`), every later request goes through a rolling window of that size, and
    a 429 pauses everyone. The search limiter does not `follow_server`: the only headers a
    search answer could carry describe the 10-second window, which searches are exempt from.
    """

    name = "unlimited"

    def __init__(self, clock: Clock | None = None, *, follows_server: bool = True) -> None:
        self.clock: Clock = clock or AnyioClock()
        self.follows_server = follows_server
        self._seq = 0
        self._paused_until = -math.inf
        self.inner: RollingWindowLimiter | None = None

    @property
    def cuts(self) -> int:
        return self.inner.cuts if self.inner else 0

    @property
    def pauses(self) -> int:
        return self.inner.pauses if self.inner else 0

    async def acquire(self) -> Ticket:
        if self.inner is not None:
            return await self.inner.acquire()
        wait = self._paused_until - self.clock.now()
        if wait > 0:
            await self.clock.sleep(wait)
        self._seq += 1
        return Ticket(self.clock.now(), self._seq)

    def complete(self, ticket: Ticket) -> None:
        if self.inner is not None and ticket.owner == id(self.inner):
            self.inner.complete(ticket)

    def observe(self, headers: Mapping[str, str], *, sent_at: float, seq: int) -> None:
        if self.inner is not None:
            self.inner.observe(headers, sent_at=sent_at, seq=seq)
            return
        seen = Observation.from_headers(headers)
        if self.follows_server and seen.max and seen.interval_s:
            self.inner = RollingWindowLimiter(seen.max, seen.interval_s, clock=self.clock,
                                              name="server-declared")

    def on_rate_limited(self, retry_after_s: float | None) -> None:
        if self.inner is not None:
            self.inner.on_rate_limited(retry_after_s)
            return
        pause = 1.0 if retry_after_s is None else min(max(retry_after_s, 0.0), 60.0)
        self._paused_until = max(self._paused_until, self.clock.now() + pause)


class Limiter(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def cuts(self) -> int: ...

    @property
    def pauses(self) -> int: ...

    async def acquire(self) -> Ticket: ...

    def complete(self, ticket: Ticket) -> None: ...

    def observe(self, headers: Mapping[str, str], *, sent_at: float, seq: int) -> None: ...

    def on_rate_limited(self, retry_after_s: float | None) -> None: ...
