"""Seeded fault injection: latency with jitter, 5xx and connection reset before any work,
and the response lost after the write committed.

The latency drawn is the time from a request's arrival to its answer, the sandbox's own
work included (as HubSpot's response time includes its work): with work on top, 150 ms
drawn was 153 ms seen by the client, which moved the rate-limit bound W/(W + latency).

Each API request draws the same four numbers from one `random.Random(seed)` whatever is
enabled, so a run with the same seed and request order injects the same faults. The
latency's jitter comes from a sequence of its own per route (an even golden-ratio step
from a start seeded by the seed and the route, started again by every `configure`): the
n-th list call gets the same latency whatever searches run beside it, so a benchmark
comparing one list cursor with an export that also searches compares like with like
(with one shared stream the export's list calls drew other numbers: measured 107.1
against 104.4 ms a page, 2.6% of the export's figure gone to the luck of the draw).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

FIVE_XX_STATUSES = (502, 503, 504)

HTML_502 = (
    b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
    b"</h1></center><hr><center>cloudflare</center></body></html>"
)


@dataclass(frozen=True, slots=True)
class Draw:
    """What to do to one request."""

    delay_s: float
    five_xx: int | None  # status to answer instead of working
    reset: bool  # abort the connection before any work
    lost: bool  # do the work, then abort without answering


GOLDEN_STEP = (5 ** 0.5 - 1) / 2  # 1/phi: the most even additive recurrence mod 1


class Faults:
    def __init__(
        self,
        seed: int,
        latency_ms: float = 0.0,
        fault_5xx: float = 0.0,
        fault_reset: float = 0.0,
        fault_lost: float = 0.0,
        search_latency_ms: float | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.jitters: dict[str, float] = {}  # route -> its latency's last jitter draw
        self.latency_ms = latency_ms
        self.fault_5xx = fault_5xx
        self.fault_reset = fault_reset
        self.fault_lost = fault_lost
        self.search_latency_ms = search_latency_ms  # None: searches take `latency_ms`
        self.injected: Counter[str] = Counter()

    @property
    def active(self) -> bool:
        return bool(self.latency_ms or self.search_latency_ms or self.fault_5xx
                    or self.fault_reset or self.fault_lost)

    def configure(
        self,
        *,
        latency_ms: float | None = None,
        fault_5xx: float | None = None,
        fault_reset: float | None = None,
        fault_lost: float | None = None,
        seed: int | None = None,
        search_latency_ms: float | None = None,
    ) -> None:
        """Change what is given; `search_latency_ms` is always set (None: as `latency_ms`).
        Every route's jitter stream starts again."""
        self.search_latency_ms = search_latency_ms
        self.jitters.clear()
        if latency_ms is not None:
            self.latency_ms = latency_ms
        if fault_5xx is not None:
            self.fault_5xx = fault_5xx
        if fault_reset is not None:
            self.fault_reset = fault_reset
        if fault_lost is not None:
            self.fault_lost = fault_lost
        if seed is not None:
            self.seed = seed
            self.rng = random.Random(seed)

    def draw(self, is_search: bool = False, route: str = "") -> Draw:
        rng = self.rng
        jitter, p_5xx, p_reset, p_lost = rng.random(), rng.random(), rng.random(), rng.random()
        latency_ms = self.latency_ms
        if is_search and self.search_latency_ms is not None:
            latency_ms = self.search_latency_ms
        delay_s = latency_ms * (0.5 + self._jitter(route)) / 1000.0 if latency_ms else 0.0
        five_xx = None
        reset = lost = False
        if p_5xx < self.fault_5xx:
            five_xx = FIVE_XX_STATUSES[int(jitter * 3) % 3]
            self.injected[f"5xx_{five_xx}"] += 1
            self.injected["5xx"] += 1
        elif p_reset < self.fault_reset:
            reset = True
            self.injected["reset"] += 1
        elif p_lost < self.fault_lost:
            lost = True
            self.injected["lost"] += 1
        return Draw(delay_s, five_xx, reset, lost)

    def _jitter(self, route: str) -> float:
        """The route's next jitter in [0, 1): a golden-ratio step from a start seeded by
        the seed and the route. The draws fill the range evenly, so a run's mean latency
        is the one set (1,500 calls: within 0.02%); independent uniform draws missed it by
        up to 0.5% (150.5 ms for 150 at seed 0), which moved benchmark figures."""
        last = self.jitters.get(route)
        if last is None:
            last = random.Random(f"{self.seed}/{route}").random() - GOLDEN_STEP
        self.jitters[route] = now = (last + GOLDEN_STEP) % 1.0
        return now

    def reset_counts(self) -> None:
        self.injected.clear()
