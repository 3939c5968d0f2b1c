"""Rate limits as HubSpot counts them: a rolling window per token (sliding log, by arrival
time), a per-second search limit, a daily quota, and the arrival log the audit reads.
"""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass, field

from engine.sandbox.settings import SandboxSettings


class SlidingLog:
    """At most `limit` accepted events in any `window_s`; O(1) amortised per event."""

    __slots__ = ("_log", "limit", "window_s")

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._log: deque[float] = deque()

    def _expire(self, now: float) -> None:
        log = self._log
        cutoff = now - self.window_s
        while log and log[0] <= cutoff:
            log.popleft()

    def try_acquire(self, now: float) -> bool:
        self._expire(now)
        if len(self._log) >= self.limit:
            return False
        self._log.append(now)
        return True

    def remaining(self, now: float) -> int:
        self._expire(now)
        return max(0, self.limit - len(self._log))

    def __repr__(self) -> str:
        return f"SlidingLog(limit={self.limit}, window_s={self.window_s}, used={len(self._log)})"


def max_in_window(times: array[float] | list[float], window_s: float) -> int:
    """The largest number of arrivals in any half-open window of length `window_s`."""
    best = 0
    start = 0
    for end, t in enumerate(times):
        while t - times[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


@dataclass(slots=True)
class TokenUsage:
    window: SlidingLog | None
    search: SlidingLog | None
    daily_used: int = 0
    arrivals: array[float] = field(default_factory=lambda: array("d"))


@dataclass(frozen=True, slots=True)
class Verdict:
    """The limiter's answer for one request: None policy = accepted."""

    policy: str | None
    headers: dict[str, str]


class Limits:
    """Per-token usage under one configuration (reconfigurable at run time)."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.usage: dict[str, TokenUsage] = {}
        self.configure(settings)

    def configure(self, settings: SandboxSettings) -> None:
        """New limits; the windows restart, the daily counts and arrival logs stay."""
        self.rate_requests = settings.rate_requests or 0
        self.rate_window_s = settings.rate_window_s
        self.search_rate_per_s = settings.search_rate_per_s or 0.0
        self.daily_limit = settings.daily_limit
        self.search_window_headers = settings.search_window_headers
        for usage in self.usage.values():
            usage.window = self._window()
            usage.search = self._search()

    def _window(self) -> SlidingLog | None:
        return SlidingLog(self.rate_requests, self.rate_window_s) if self.rate_requests else None

    def _search(self) -> SlidingLog | None:
        if not self.search_rate_per_s:
            return None
        # N per second; fractional rates become one per 1/rate seconds.
        if self.search_rate_per_s >= 1:
            return SlidingLog(int(self.search_rate_per_s), 1.0)
        return SlidingLog(1, 1.0 / self.search_rate_per_s)

    def _usage(self, token: str) -> TokenUsage:
        usage = self.usage.get(token)
        if usage is None:
            usage = self.usage[token] = TokenUsage(self._window(), self._search())
        return usage

    def check(self, token: str, now: float, is_search: bool) -> Verdict:
        usage = self._usage(token)
        daily = self.daily_limit
        if daily is not None and usage.daily_used >= daily:
            return Verdict("DAILY", {} if is_search else self._headers(usage, now))
        if is_search:
            if usage.search is not None and not usage.search.try_acquire(now):
                return Verdict("SECONDLY", {})
            usage.daily_used += 1
            # HubSpot sends no rate-limit headers on search answers; this server can send
            # the 10-second window's (which searches do not count against) to test clients.
            return Verdict(None, self._headers(usage, now) if self.search_window_headers
                           else {})
        if usage.window is not None and not usage.window.try_acquire(now):
            return Verdict("TEN_SECONDLY_ROLLING", self._headers(usage, now))
        usage.daily_used += 1
        usage.arrivals.append(now)
        return Verdict(None, self._headers(usage, now))

    def _headers(self, usage: TokenUsage, now: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        if usage.window is not None:
            headers["X-HubSpot-RateLimit-Max"] = str(self.rate_requests)
            headers["X-HubSpot-RateLimit-Remaining"] = str(usage.window.remaining(now))
            headers["X-HubSpot-RateLimit-Interval-Milliseconds"] = str(
                int(self.rate_window_s * 1000)
            )
        if self.daily_limit is not None:
            headers["X-HubSpot-RateLimit-Daily"] = str(self.daily_limit)
            headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(
                max(0, self.daily_limit - usage.daily_used)
            )
        return headers

    def max_accepted_in_window(self, window_s: float | None = None) -> dict[str, int]:
        """Per token: the most non-search requests accepted in any window (exact)."""
        w = window_s if window_s is not None else self.rate_window_s
        return {token: max_in_window(u.arrivals, w) for token, u in self.usage.items()}

    def reset(self) -> None:
        self.usage.clear()
