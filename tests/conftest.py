from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import anyio
import pytest


class ManualClock:
    """A clock that only moves when someone sleeps on it: tests never wait for real."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


class RecordingServer:
    """A loopback aiohttp server that records arrival times and answers via `handler`."""

    def __init__(self, handler=None) -> None:
        self.arrivals: list[float] = []
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.handler = handler
        self.base_url = ""
        self._runner = None

    async def _handle(self, request):
        from aiohttp import web

        self.arrivals.append(time.monotonic())
        body = await request.read()
        self.requests.append((request.method, request.path_qs, dict(request.headers), body))
        if self.handler is not None:
            return await self.handler(request, body)
        return web.json_response({"ok": True})

    async def __aenter__(self) -> RecordingServer:
        from aiohttp import web

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()


def most_in_any_window(times: list[float], window_s: float) -> int:
    """The largest number of events in any half-open interval of `window_s`."""
    times = sorted(times)
    best = lo = 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


class SandboxThread:
    """A sandbox serving from its own thread and event loop, for tests that run the CLI."""

    def __init__(self, **settings) -> None:
        import threading

        self.settings = settings
        self.sandbox = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._loop = None
        self._stop = None

    def _serve(self) -> None:
        import asyncio

        from engine.sandbox import SandboxSettings, running_sandbox

        async def main():
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with running_sandbox(SandboxSettings(**self.settings)) as sandbox:
                self.sandbox = sandbox
                self._ready.set()
                await self._stop.wait()

        asyncio.run(main())

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(10), "sandbox did not start"
        return self.sandbox

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def sandbox_env(monkeypatch):
    """Start a threaded sandbox with the given settings; the token goes into the env."""
    started = []

    def start(**settings):
        server = SandboxThread(**settings)
        sandbox = server.__enter__()
        started.append(server)
        monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", sandbox.token)
        return sandbox

    yield start
    for server in started:
        server.__exit__(None, None, None)


class StandaloneSandbox:
    def __init__(self, *flags: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "sandbox", "--port", "0", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.base_url = self.token = ""
        assert self.proc.stdout is not None
        while not (self.base_url and self.token):
            line = self.proc.stdout.readline()
            assert line, "sandbox exited before printing its address"
            key, _, value = line.strip().partition("=")
            if key == "base_url":
                self.base_url = value
            elif key == "token":
                self.token = value

    def get(self, path: str):
        request = urllib.request.Request(self.base_url + path,
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path
