"""Search-only settings: a search latency of its own, and the 10-second window's rate-limit
headers on search answers (HubSpot sends none there; clients must not be fooled by them)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import aiohttp

from engine.sandbox import SandboxSettings, running_sandbox

LIST = "/crm/v3/objects/contacts"
SEARCH = "/crm/v3/objects/contacts/search"
MAX = "X-HubSpot-RateLimit-Max"
REMAINING = "X-HubSpot-RateLimit-Remaining"
INTERVAL = "X-HubSpot-RateLimit-Interval-Milliseconds"


async def _timed(session, sandbox, method, path):
    headers = {"Authorization": f"Bearer {sandbox.token}"}
    started = time.monotonic()
    async with session.request(method, sandbox.base_url + path, headers=headers,
                               json={} if method == "POST" else None) as resp:
        await resp.read()
        return resp.status, dict(resp.headers), time.monotonic() - started


async def test_search_answers_take_their_own_latency_set_at_start_or_run_time():
    settings = SandboxSettings(rate_requests=None, search_rate_per_s=None,
                               search_latency_ms=400)
    async with running_sandbox(settings) as sandbox, aiohttp.ClientSession() as session:
        status, _, search_s = await _timed(session, sandbox, "POST", SEARCH)
        assert status == 200 and search_s >= 0.2  # jitter 0.5x..1.5x
        status, _, list_s = await _timed(session, sandbox, "GET", LIST)
        assert status == 200 and list_s < 0.15
        sandbox.configure(search_latency_ms=None, latency_ms=0)
        _, _, search_s = await _timed(session, sandbox, "POST", SEARCH)
        assert search_s < 0.15


async def test_search_window_headers_describe_the_window_searches_do_not_count_against():
    settings = SandboxSettings(rate_requests=10, rate_window_s=10.0, search_rate_per_s=None,
                               search_window_headers=True)
    async with running_sandbox(settings) as sandbox, aiohttp.ClientSession() as session:
        for _ in range(3):
            assert (await _timed(session, sandbox, "GET", LIST))[0] == 200
        for _ in range(4):
            status, headers, _ = await _timed(session, sandbox, "POST", SEARCH)
            assert status == 200
            assert (headers[MAX], headers[REMAINING], headers[INTERVAL]) == ("10", "7", "10000")
        _, headers, _ = await _timed(session, sandbox, "GET", LIST)
        assert headers[REMAINING] == "6"  # searches took nothing from the window
        sandbox.configure(search_window_headers=False)
        _, headers, _ = await _timed(session, sandbox, "POST", SEARCH)
        assert not any(h.startswith("X-HubSpot-RateLimit") for h in headers)


def test_standalone_sandbox_takes_the_search_flags():
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "sandbox", "--port", "0", "--rate", "50/10s",
         "--search-latency-ms", "400", "--search-window-headers"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        found: dict[str, str] = {}
        while len(found) < 2:
            line = proc.stdout.readline()
            assert line, "sandbox exited before announcing itself"
            key, _, value = line.strip().partition("=")
            found[key] = value
        request = urllib.request.Request(
            found["base_url"] + SEARCH, data=b"{}", method="POST",
            headers={"Authorization": f"Bearer {found['token']}",
                     "Content-Type": "application/json"})
        started = time.monotonic()
        with urllib.request.urlopen(request, timeout=10) as resp:  # loopback only
            body = json.loads(resp.read())
            headers = dict(resp.headers)
        assert time.monotonic() - started >= 0.2
        assert body["total"] == 0
        assert (headers[MAX], headers[INTERVAL]) == ("50", "10000")
    finally:
        proc.terminate()
        proc.wait(20)
        proc.stdout.close()
