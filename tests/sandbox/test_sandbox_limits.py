"""Rate limits: rolling window per token, daily quota, search secondly limit, audit window."""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp

from engine.sandbox import SandboxSettings, running_sandbox
from engine.sandbox.audit import token_fingerprint

LIST = "/crm/v3/objects/contacts"


async def _get(session, sandbox, path=LIST, token=None):
    headers = {"Authorization": f"Bearer {token or sandbox.token}"}
    async with session.get(sandbox.base_url + path, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def test_burst_far_above_the_limit_gets_hubspot_429s():
    settings = SandboxSettings(rate_requests=20, rate_window_s=5.0)
    async with running_sandbox(settings) as sandbox, aiohttp.ClientSession() as session:
        replies = await asyncio.gather(*(_get(session, sandbox) for _ in range(120)))
        statuses = [s for s, _, _ in replies]
        assert statuses.count(200) == 20
        assert statuses.count(429) == 100
        _, headers, body = next(r for r in replies if r[0] == 429)
        assert body["status"] == "error"
        assert body["message"] == "You have reached your ten_secondly_rolling limit."
        assert body["errorType"] == "RATE_LIMIT"
        assert body["policyName"] == "TEN_SECONDLY_ROLLING"
        uuid.UUID(body["correlationId"])
        assert body["requestId"]
        assert headers["X-HubSpot-RateLimit-Max"] == "20"
        assert headers["X-HubSpot-RateLimit-Remaining"] == "0"
        assert headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "5000"
        ok_headers = next(h for s, h, _ in replies if s == 200)
        assert 0 <= int(ok_headers["X-HubSpot-RateLimit-Remaining"]) < 20
        report = sandbox.audit()
        assert report["http_429"] == 100
        assert report["rate_limited"] == {"TEN_SECONDLY_ROLLING": 100}
        assert report["window"]["max_accepted_in_any_window"] == 20


async def test_window_rolls_and_the_audit_max_never_exceeds_the_limit():
    settings = SandboxSettings(rate_requests=10, rate_window_s=0.25)
    async with running_sandbox(settings) as sandbox, aiohttp.ClientSession() as session:
        accepted = 0
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline:
            statuses = await asyncio.gather(*(_get(session, sandbox) for _ in range(8)))
            accepted += sum(1 for s, _, _ in statuses if s == 200)
        report = sandbox.audit()
        assert accepted > 10  # the window rolled: more than one window's worth got through
        assert report["http_429"] > 0
        assert report["window"]["max_accepted_in_any_window"] <= 10


async def test_windows_are_per_token():
    settings = SandboxSettings(rate_requests=3, rate_window_s=30.0, extra_tokens=("pat-b",))
    async with running_sandbox(settings) as sandbox, aiohttp.ClientSession() as session:
        first = [await _get(session, sandbox) for _ in range(4)]
        other = [await _get(session, sandbox, token="pat-b") for _ in range(3)]
        assert [s for s, _, _ in first] == [200, 200, 200, 429]
        assert [s for s, _, _ in other] == [200, 200, 200]
        assert sandbox.audit()["window"]["by_token"] == {token_fingerprint(sandbox.token): 3,
                                                         token_fingerprint("pat-b"): 3}


async def test_daily_quota_answers_daily_429_with_daily_headers():
    settings = SandboxSettings(rate_requests=None, daily_limit=2)
    async with running_sandbox(settings) as sandbox, aiohttp.ClientSession() as session:
        first = await _get(session, sandbox)
        assert first[1]["X-HubSpot-RateLimit-Daily"] == "2"
        assert first[1]["X-HubSpot-RateLimit-Daily-Remaining"] == "1"
        await _get(session, sandbox)
        status, headers, body = await _get(session, sandbox)
        assert status == 429
        assert body["policyName"] == "DAILY"
        assert headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"


async def test_search_has_its_own_secondly_limit_and_no_rate_headers():
    settings = SandboxSettings(rate_requests=1, rate_window_s=60.0, search_rate_per_s=2)
    async with running_sandbox(settings) as sandbox, aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {sandbox.token}"}
        url = sandbox.base_url + "/crm/v3/objects/contacts/search"
        replies = []
        for _ in range(3):
            async with session.post(url, json={}, headers=headers) as resp:
                replies.append((resp.status, dict(resp.headers), await resp.json()))
        assert [s for s, _, _ in replies] == [200, 200, 429]
        assert all(not any(h.startswith("X-HubSpot-RateLimit") for h in hs)
                   for _, hs, _ in replies)
        body = replies[2][2]
        assert body["message"] == "You have reached your secondly limit."
        assert body["policyName"] == "SECONDLY"
        # searches are exempt from the 10-second window: the one list call still passes
        status, _, _ = await _get(session, sandbox)
        assert status == 200


async def test_limits_change_at_run_time_through_the_config_route():
    async with running_sandbox(SandboxSettings(rate_requests=None)) as sandbox, \
            aiohttp.ClientSession() as session:
        async with session.post(sandbox.base_url + "/__sandbox/config",
                                json={"rate_requests": 1, "rate_window_s": 60},
                                headers={"Authorization": f"Bearer {sandbox.token}"}) as resp:
            assert resp.status == 200
            assert (await resp.json())["rate_requests"] == 1
        statuses = [(await _get(session, sandbox))[0] for _ in range(2)]
        assert statuses == [200, 429]
        sandbox.configure(rate_requests=0)
        assert (await _get(session, sandbox))[0] == 200
