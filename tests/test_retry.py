import random
from datetime import UTC, datetime

import orjson
import pytest

from engine.config import RetryPolicy
from engine.errors import ApiError, FatalApiError, QuotaExhausted, RetryableApiError
from engine.retry import (
    RetryBudget,
    Verdict,
    backoff_s,
    classify,
    error_for,
    parse_retry_after,
)

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


def body(**fields):
    return orjson.dumps(fields)


TEN_SECONDLY = body(status="error", message="You have reached your ten_secondly_rolling limit.",
                    errorType="RATE_LIMIT", policyName="TEN_SECONDLY_ROLLING")
SECONDLY = body(status="error", message="You have reached your secondly limit.",
                errorType="RATE_LIMIT", policyName="SECONDLY")
DAILY = body(status="error", message="You have reached your daily limit.",
             errorType="RATE_LIMIT", policyName="DAILY")


@pytest.mark.parametrize(
    ("status", "payload", "verdict", "policy"),
    [
        (200, b"{}", Verdict.OK, None),
        (201, b"{}", Verdict.OK, None),
        (207, b"{}", Verdict.OK, None),
        (204, b"", Verdict.OK, None),
        (429, TEN_SECONDLY, Verdict.RATE_LIMITED, "TEN_SECONDLY_ROLLING"),
        (429, SECONDLY, Verdict.RATE_LIMITED, "SECONDLY"),
        (429, DAILY, Verdict.QUOTA, "DAILY"),
        (429, b"<html>", Verdict.RATE_LIMITED, None),
        (423, b"{}", Verdict.RETRY, None),
        (477, b"{}", Verdict.RETRY, None),
        (502, b"Bad gateway", Verdict.RETRY, None),
        (503, b"{}", Verdict.RETRY, None),
        (504, b"{}", Verdict.RETRY, None),
        (521, b"", Verdict.RETRY, None),
        (530, b"", Verdict.RETRY, None),
        (500, b"{}", Verdict.FAIL, None),
        (400, b"{}", Verdict.FAIL, None),
        (404, b"{}", Verdict.FAIL, None),
        (409, b"{}", Verdict.FAIL, None),
        (301, b"", Verdict.FAIL, None),
        (401, b"{}", Verdict.FATAL, None),
        (403, b"{}", Verdict.FATAL, None),
    ],
)
def test_classification(status, payload, verdict, policy):
    outcome = classify(status, {}, payload, NOW)
    assert outcome.verdict is verdict
    assert outcome.policy == policy


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        ("-4", 0.0),
        ("Sun, 22 Nov 2026 12:00:30 GMT", 30.0),
        ("Sun, 22 Nov 2026 11:00:00 GMT", 0.0),
        ("999999999", 999999999.0),
        ("soon", None),
        (None, None),
        ("nan", None),
    ],
)
def test_retry_after_seconds_and_http_date(value, seconds):
    assert parse_retry_after(value, NOW) == seconds


def test_retry_after_is_read_from_headers():
    outcome = classify(477, {"Retry-After": "7"}, b"", NOW)
    assert outcome.retry_after_s == 7.0


def test_errors_carry_hubspot_fields():
    payload = body(status="error", message="Property values were not valid",
                   correlationId="abc-123", category="VALIDATION_ERROR",
                   errors=[{"message": "bad", "code": "INVALID_DATE"}])
    error = error_for(classify(400, {}, payload), payload, what="POST /x")
    assert type(error) is ApiError
    assert (error.status, error.category, error.correlation_id) == (400, "VALIDATION_ERROR",
                                                                    "abc-123")
    assert error.errors[0]["code"] == "INVALID_DATE"
    assert "Property values were not valid" in str(error)


def test_error_types_by_verdict():
    assert isinstance(error_for(classify(401, {}, b""), b"", what="x"), FatalApiError)
    assert isinstance(error_for(classify(429, {}, DAILY), DAILY, what="x"), QuotaExhausted)
    retry = error_for(classify(503, {"Retry-After": "2"}, b"oops"), b"oops", what="GET /y")
    assert isinstance(retry, RetryableApiError)
    assert retry.retry_after_s == 2.0
    assert "GET /y answered HTTP 503" in str(retry)


def test_backoff_is_full_jitter_and_capped():
    policy = RetryPolicy(base_s=0.5, cap_s=20.0)
    rng = random.Random(7)
    delays = [backoff_s(attempt, policy, rng) for attempt in range(40)]
    assert all(0 <= d <= 20.0 for d in delays)
    assert all(d <= 0.5 * 2**a for a, d in enumerate(delays))
    assert max(delays[10:]) > 10  # reaches towards the cap
    assert backoff_s(3, policy, random.Random(1)) == backoff_s(3, policy, random.Random(1))


def test_budget_bounds_retries_to_a_fraction_of_attempts():
    budget = RetryBudget(ratio=0.2, minimum=10)
    granted = 0
    for _ in range(1000):
        budget.on_first_attempt()
        granted += budget.try_spend()
    assert granted <= 10 + 0.2 * 1000
    assert granted >= 0.2 * 1000 - 1
