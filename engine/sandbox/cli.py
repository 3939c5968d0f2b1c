"""`hsbulk sandbox`: serve the sandbox until SIGINT/SIGTERM.

Prints `base_url=...` and `token=...` lines (flushed) so a parent process can read them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import signal
import sys

from engine.sandbox import SandboxSettings, running_sandbox
from engine.sandbox.settings import DEFAULT_TOKEN

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*s\s*$")


def parse_rate(text: str) -> tuple[int, float]:
    """`190/10s` -> (190, 10.0); `0` or `off` disables the window -> (0, 10.0)."""
    if text.strip().lower() in ("0", "off", "none"):
        return 0, 10.0
    match = _RATE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"rate must look like 190/10s, got {text!r}")
    return int(match.group(1)), float(match.group(2) or 1.0)


def parse_per_second(text: str) -> float:
    """`5/s` or `5` -> 5.0 (0 disables)."""
    value = text.strip().lower().removesuffix("/s")
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"search rate must look like 5/s, got {text!r}") from None


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("a fault probability is between 0 and 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="listen address (loopback)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    parser.add_argument("--rate", type=parse_rate, default=(190, 10.0), metavar="R/Ws",
                        help="rolling window per token, e.g. 190/10s; 0 disables")
    parser.add_argument("--search-rate", type=parse_per_second, default=5.0, metavar="N/s",
                        help="search requests per second per token; 0 disables")
    parser.add_argument("--daily", type=int, default=None, metavar="N",
                        help="daily request quota per token")
    parser.add_argument("--latency-ms", type=float, default=0.0, metavar="N",
                        help="latency per API call, arrival to answer, work included "
                             "(jitter 0.5x-1.5x)")
    parser.add_argument("--search-latency-ms", type=float, default=None, metavar="N",
                        help="latency per search call instead (default: --latency-ms)")
    parser.add_argument("--search-window-headers", action="store_true",
                        help="send the rolling window's X-HubSpot-RateLimit-* headers on "
                        "search answers too (HubSpot sends none there)")
    parser.add_argument("--fault-5xx", type=_probability, default=0.0, metavar="P")
    parser.add_argument("--fault-reset", type=_probability, default=0.0, metavar="P")
    parser.add_argument("--fault-lost", type=_probability, default=0.0, metavar="P")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    parser.add_argument("--lean", action="store_true",
                        help="keep only ids and unique keys; skip value validation")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the accepted bearer token")


def settings_from(args: argparse.Namespace) -> SandboxSettings:
    rate_requests, window_s = args.rate
    return SandboxSettings(
        host=args.host, port=args.port, rate_requests=rate_requests, rate_window_s=window_s,
        search_rate_per_s=args.search_rate, daily_limit=args.daily,
        latency_ms=args.latency_ms, search_latency_ms=args.search_latency_ms,
        search_window_headers=args.search_window_headers, fault_5xx=args.fault_5xx,
        fault_reset=args.fault_reset,
        fault_lost=args.fault_lost, seed=args.seed, lean=args.lean, token=args.token,
    )


async def serve(settings: SandboxSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with running_sandbox(settings) as sandbox:
            print(f"base_url={sandbox.base_url}", flush=True)
            print(f"token={sandbox.token}", flush=True)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def tune_collector() -> None:
    """Set this process's cyclic collector for a heap of records.

    Every stored record is one long-lived container; almost everything else a request makes
    is freed by reference counting. At the default threshold (700 net allocations) the
    young generation is collected every few batches, and the collections took about a sixth
    of the CPU of a lean batch create benchmark; at 100,000 there are over a hundred times
    fewer (cyclic garbage waits longer, which a sandbox can afford). The objects alive after
    start-up (modules, classes) are frozen out of all collections.
    """
    gc.freeze()
    gc.set_threshold(100_000, *gc.get_threshold()[1:])


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        print("hsbulk sandbox: warning: listening beyond loopback", file=sys.stderr)
    tune_collector()
    asyncio.run(serve(settings))
    return 0
