"""How much of the rolling-window quota the client limiter uses, as the server sees it.

Starts a loopback server in a child process that plays HubSpot's rolling window: it counts
requests by arrival time (at most R in any W seconds, else a 429 with HubSpot's body),
answers after a jittered latency (0.5x-1.5x of --latency-ms) and sends the
`X-HubSpot-RateLimit-*` headers. This process drives `HubSpotClient` (the real limiter,
the real aiohttp transport) with --workers tasks posting batch calls until --calls calls
are done, then reads the server's arrival log.

Reported per pacer (`none`: the rolling-window accounting alone; `aiolimiter`: a no-burst
`AsyncLimiter(1, W/R)` in front of it; aiolimiter is not a dependency of hsbulk: install it
to compare): the requests the server saw per rolling W seconds in the steady part (from one
window after the first arrival to the last), as a share of R (`engine.bench.quota_figures`
on the arrival times: `steady_share`, the rolling counts' mean and max), and the 429s.
Results go to benchmarks/results/bench_ratelimit.json.

    .venv/bin/python benchmarks/bench_ratelimit.py [--calls 1500] [--rate 190/10s]
                                                   [--latency-ms 150] [--pacer none]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import subprocess
import sys
import time
import urllib.request
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.bench import quota_figures  # noqa: E402
from engine.client import HubSpotClient  # noqa: E402
from engine.config import ClientSettings, Rate, Secret  # noqa: E402
from engine.ratelimit import (  # noqa: E402
    Limiter,
    RollingWindowLimiter,
    Ticket,
    first_window_in_flight,
)

RESULTS = ROOT / "benchmarks" / "results" / "bench_ratelimit.json"
TOKEN = "bench-loopback-token"  # the loopback counter accepts any bearer token
PATH = "/crm/v3/objects/contacts/batch/create"


# -- the server (child process) -------------------------------------------------------

async def serve(requests: int, window_s: float, latency_ms: float, seed: int) -> None:
    from aiohttp import web

    arrivals: list[float] = []
    accepted: deque[float] = deque()
    rejected = 0
    rng = random.Random(seed)

    def headers(now: float) -> dict[str, str]:
        while accepted and accepted[0] <= now - window_s:
            accepted.popleft()
        return {"X-HubSpot-RateLimit-Max": str(requests),
                "X-HubSpot-RateLimit-Remaining": str(max(0, requests - len(accepted))),
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(window_s * 1000))}

    async def call(request: web.Request) -> web.Response:
        nonlocal rejected
        now = time.monotonic()
        await request.read()
        answer = headers(now)
        if len(accepted) >= requests:
            rejected += 1
            body = {"status": "error", "message": "You have reached your ten_secondly_rolling "
                    "limit.", "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"}
            return web.json_response(body, status=429, headers=answer)
        accepted.append(now)
        arrivals.append(now)
        await asyncio.sleep(latency_ms / 1000 * rng.uniform(0.5, 1.5))
        return web.json_response({"status": "COMPLETE", "results": []}, headers=answer)

    async def log(_: web.Request) -> web.Response:
        return web.json_response({"arrivals": arrivals, "http_429": rejected})

    app = web.Application()
    app.router.add_get("/__arrivals", log)
    app.router.add_post(PATH, call)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()


# -- the client (this process) --------------------------------------------------------

class PacedLimiter:
    """A no-burst `AsyncLimiter(1, W/R)` in front of the rolling-window accounting."""

    def __init__(self, inner: RollingWindowLimiter) -> None:
        self.inner = inner
        self.name = inner.name
        from aiolimiter import AsyncLimiter  # not a dependency: pip install aiolimiter

        self.pacer = AsyncLimiter(1, inner.window_s / inner.requests)

    @property
    def cuts(self) -> int:
        return self.inner.cuts

    @property
    def pauses(self) -> int:
        return self.inner.pauses

    async def acquire(self) -> Ticket:
        await self.pacer.acquire()
        return await self.inner.acquire()

    def complete(self, ticket: Ticket) -> None:
        self.inner.complete(ticket)

    def observe(self, headers: dict[str, str], *, sent_at: float, seq: int) -> None:
        self.inner.observe(headers, sent_at=sent_at, seq=seq)

    def on_rate_limited(self, retry_after_s: float | None) -> None:
        self.inner.on_rate_limited(retry_after_s)


async def drive(base_url: str, rate: Rate, calls: int, workers: int, pacer: str,
                first_spread: float = 0.0) -> dict:
    settings = ClientSettings(base_url=base_url, token=Secret(TOKEN), rate=rate,
                              concurrency=workers)
    # as HubSpotClient makes it (but for `first_spread`, which it leaves at 0)
    inner = RollingWindowLimiter(rate.requests, rate.window_s, first_spread=first_spread,
                                 first_in_flight=first_window_in_flight(workers))
    limiter: Limiter = PacedLimiter(inner) if pacer == "aiolimiter" else inner
    left = calls
    body = b'{"inputs": []}'
    async with HubSpotClient(settings, limiter=limiter) as client:
        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await client.request("POST", PATH, body=body)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(workers)))
        elapsed = time.monotonic() - started
    return {"elapsed_s": round(elapsed, 2), "client_429": client.stats.http_429,
            "api_calls": client.stats.api_calls}


def one_run(args: argparse.Namespace, pacer: str) -> dict:
    rate = Rate.parse(args.rate)
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--rate", args.rate,
         "--latency-ms", str(args.latency_ms)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        base_url = f"http://127.0.0.1:{int(server.stdout.readline())}"
        client = asyncio.run(drive(base_url, rate, args.calls, args.workers, pacer,
                                   args.first_spread))
        with urllib.request.urlopen(base_url + "/__arrivals", timeout=30) as answer:
            seen = json.loads(answer.read())
    finally:
        server.terminate()
        server.wait(10)
    return {"pacer": pacer, "first_spread": args.first_spread, **client,
            "server_429": seen["http_429"], **quota_figures(seen["arrivals"], rate)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--rate", default="190/10s")
    parser.add_argument("--latency-ms", type=float, default=150.0)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--pacer", choices=["none", "aiolimiter", "both"], default="none",
                        help="aiolimiter (and both) need `pip install aiolimiter`")
    parser.add_argument("--first-spread", type=float, default=0.0,
                        help="spread the first window's sends over this share of it "
                        "(RollingWindowLimiter.first_spread; 0 keeps the burst)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.serve:
        rate = Rate.parse(args.rate)
        asyncio.run(serve(rate.requests, rate.window_s, args.latency_ms, seed=13))
        return
    pacers = ["none", "aiolimiter"] if args.pacer == "both" else [args.pacer]
    runs = [one_run(args, pacer) for pacer in pacers]
    for run in runs:
        print(json.dumps(run))
    result = {"calls": args.calls, "rate": args.rate, "latency_ms": args.latency_ms,
              "workers": args.workers, "python": platform.python_version(), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
