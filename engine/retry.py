"""What to do with a response, and when to try again. Pure: no I/O, no event loop.

`classify(status, headers, body)` turns an HTTP answer into an `Outcome`; `backoff_s`
gives full-jitter exponential delays from an injected `random.Random`; `RetryBudget`
caps retries to a fraction of first attempts so an outage cannot multiply traffic.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from engine.config import RetryPolicy
from engine.errors import ApiError, FatalApiError, QuotaExhausted, RetryableApiError


class Verdict(enum.Enum):
    OK = "ok"  # 2xx (a 207 is split per input by the caller)
    RETRY = "retry"  # transient: back off and send again
    RATE_LIMITED = "rate_limited"  # 429 of a rolling/secondly policy: pause the limiter, retry
    QUOTA = "quota"  # 429 DAILY: save and stop, never retry
    FATAL = "fatal"  # 401/403: the run cannot go on
    FAIL = "fail"  # other 4xx (and 3xx, 500): the request itself is wrong


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    status: int
    retry_after_s: float | None = None
    policy: str | None = None


RETRYABLE_STATUSES = frozenset({423, 477, 502, 503, 504})
DAILY_POLICIES = frozenset({"DAILY"})


def parse_body(body: bytes) -> dict[str, Any]:
    """HubSpot's error body as a dict; every field optional, anything else -> {}."""
    if not body:
        return {}
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP-date; None if unusable."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def classify(
    status: int, headers: Mapping[str, str], body: bytes, now: datetime | None = None
) -> Outcome:
    if 200 <= status < 300:
        return Outcome(Verdict.OK, status)
    retry_after = parse_retry_after(headers.get("Retry-After"), now)
    if status == 429:
        policy = parse_body(body).get("policyName")
        policy = policy if isinstance(policy, str) else None
        if policy in DAILY_POLICIES:
            return Outcome(Verdict.QUOTA, status, policy=policy)
        return Outcome(Verdict.RATE_LIMITED, status, retry_after, policy)
    if status in RETRYABLE_STATUSES or status >= 521:
        return Outcome(Verdict.RETRY, status, retry_after)
    if status in (401, 403):
        return Outcome(Verdict.FATAL, status)
    return Outcome(Verdict.FAIL, status)


def error_for(outcome: Outcome, body: bytes, *, what: str) -> Exception:
    """The typed error for a non-OK outcome, carrying HubSpot's own fields."""
    fields = parse_body(body)
    message = fields.get("message")
    if not isinstance(message, str) or not message:
        message = f"{what} answered HTTP {outcome.status}"
    category = fields.get("category") or fields.get("errorType")
    errors = fields.get("errors")
    kwargs: dict[str, Any] = {
        "category": category if isinstance(category, str) else None,
        "correlation_id": fields.get("correlationId") if isinstance(
            fields.get("correlationId"), str) else None,
        "errors": errors if isinstance(errors, list) else None,
        "policy": outcome.policy,
        "body": fields,
    }
    if outcome.verdict is Verdict.QUOTA:
        return QuotaExhausted(f"HubSpot's daily API limit is reached ({message}); "
                              "run the same command again after the daily reset")
    if outcome.verdict is Verdict.FATAL:
        return FatalApiError(outcome.status, message, **kwargs)
    if outcome.verdict in (Verdict.RETRY, Verdict.RATE_LIMITED):
        return RetryableApiError(outcome.status, message, retry_after_s=outcome.retry_after_s,
                                 **kwargs)
    return ApiError(outcome.status, message, **kwargs)


def backoff_s(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)] for attempt 0, 1, 2..."""
    ceiling = min(policy.cap_s, policy.base_s * (2 ** min(attempt, 30)))
    return rng.uniform(0.0, ceiling)


class RetryBudget:
    """Retries may be at most `ratio` of first attempts, plus `minimum` (a token bucket).

    Every first attempt deposits `ratio` of a token (up to `minimum + ratio * 100`); every
    retry takes one. An outage therefore adds at most `minimum + ratio * attempts` extra
    requests however long it lasts.
    """

    def __init__(self, ratio: float, minimum: int) -> None:
        self.ratio = ratio
        self.minimum = minimum
        self.capacity = minimum + ratio * 100
        self.tokens = float(minimum)
        self.spent = 0
        self.denied = 0

    def on_first_attempt(self) -> None:
        self.tokens = min(self.capacity, self.tokens + self.ratio)

    def try_spend(self) -> bool:
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.spent += 1
            return True
        self.denied += 1
        return False

    def __repr__(self) -> str:
        return f"<RetryBudget tokens={self.tokens:.1f} spent={self.spent} denied={self.denied}>"
