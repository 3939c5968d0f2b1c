"""The sandbox's settings: where it listens, its limits, its faults."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TOKEN = "pat-sandbox-0000"


@dataclass(frozen=True, slots=True)
class SandboxSettings:
    """Everything the sandbox can be told. `rate_requests` 0 or None disables the window."""

    host: str = "127.0.0.1"
    port: int = 0
    rate_requests: int | None = 190
    rate_window_s: float = 10.0
    search_rate_per_s: float | None = 5.0
    daily_limit: int | None = None
    latency_ms: float = 0.0
    search_latency_ms: float | None = None  # None: search answers take `latency_ms` too
    search_window_headers: bool = False  # search answers carry the window's rate headers
    fault_5xx: float = 0.0
    fault_reset: float = 0.0
    fault_lost: float = 0.0
    seed: int = 0
    lean: bool = False
    token: str = DEFAULT_TOKEN
    extra_tokens: tuple[str, ...] = ()
    association_batch_limit: int = 2_000

    @property
    def tokens(self) -> frozenset[str]:
        return frozenset((self.token, *self.extra_tokens))


# Settings that `POST /__sandbox/config` and `Sandbox.configure` may change at run time.
RUNTIME_FIELDS = frozenset({
    "rate_requests", "rate_window_s", "search_rate_per_s", "daily_limit", "latency_ms",
    "search_latency_ms", "search_window_headers",
    "fault_5xx", "fault_reset", "fault_lost", "seed", "extra_tokens",
    "association_batch_limit",
})
