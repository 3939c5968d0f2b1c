"""How fast the sandbox takes batch creates: records/s, validated and lean.

Runs `python -m engine sandbox` as a separate process (rate limit off, pinned to one core when
possible) and drives it from this process with an aiohttp client over several connections,
sending pre-encoded batch creates of 100 contacts x 10 properties with unique emails.
Reports the median of several runs per mode and writes benchmarks/results/bench_sandbox.json.

    .venv/bin/python benchmarks/bench_sandbox.py [--records 200000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "bench_sandbox.json"
BATCH = 100


def bodies(run: int, records: int) -> list[bytes]:
    """Pre-encoded batch create bodies: 100 contacts, 10 valid properties, unique emails."""
    out = []
    for b in range(records // BATCH):
        inputs = []
        for i in range(BATCH):
            n = b * BATCH + i
            inputs.append({
                "properties": {
                    "email": f"r{run}-{n}@bench.example.com",
                    "firstname": f"First{n}",
                    "lastname": f"Last{n}",
                    "phone": f"+1555{n:07d}",
                    "company": f"Company {n % 997}",
                    "website": f"https://c{n % 997}.example.com",
                    "city": "Springfield",
                    "lifecyclestage": "lead",
                    "date_of_birth": "1990-01-31",
                    "hs_email_optout": "false",
                },
                "objectWriteTraceId": f"{run}-{n}",
            })
        out.append(orjson.dumps({"inputs": inputs}))
    return out


def start_server(lean: bool, cpu: int | None) -> tuple[subprocess.Popen[str], str, str]:
    cmd = [sys.executable, "-m", "engine", "sandbox", "--port", "0", "--rate", "0",
           "--search-rate", "0"]
    if lean:
        cmd.append("--lean")

    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            preexec_fn=pin if cpu is not None else None)
    found: dict[str, str] = {}
    assert proc.stdout is not None
    while len(found) < 2:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("sandbox exited before announcing itself")
        key, _, value = line.strip().partition("=")
        found[key] = value
    return proc, found["base_url"], found["token"]


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


async def drive(base_url: str, token: str, payloads: list[bytes], connections: int) -> float:
    """Send every payload over `connections` workers; return records/s."""
    url = base_url + "/crm/v3/objects/contacts/batch/create"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    queue = list(reversed(payloads))
    errors = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while queue:
            body = queue.pop()
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 201:
                    errors += 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{errors} batches failed")
    return len(payloads) * BATCH / elapsed


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux), to tell whether the server was the bottleneck."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_mode(lean: bool, records: int, runs: int, connections: int,
               server_cpu: int | None) -> dict[str, object]:
    rates = []
    busy = []
    for run in range(runs):
        payloads = bodies(run, records)
        proc, base_url, token = start_server(lean, server_cpu)
        try:
            cpu_before, wall_before = cpu_seconds(proc.pid), time.perf_counter()
            rates.append(asyncio.run(drive(base_url, token, payloads, connections)))
            wall = time.perf_counter() - wall_before
            busy.append((cpu_seconds(proc.pid) - cpu_before) / wall)
        finally:
            stop_server(proc)
    return {
        "mode": "lean" if lean else "validated",
        "records_per_run": records,
        "runs": runs,
        "records_per_s": [round(r) for r in rates],
        "median_records_per_s": round(statistics.median(rates)),
        "server_cpu_busy": [round(b, 2) for b in busy],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu = cpus[-1] if len(cpus) >= 2 else None
    if server_cpu is not None:  # the load generator gets the other core(s)
        os.sched_setaffinity(0, set(cpus) - {server_cpu})
    results = [bench_mode(lean, args.records, args.runs, args.connections, server_cpu)
               for lean in (False, True)]
    report = {
        "benchmark": "sandbox batch create, 100 contacts x 10 properties per request",
        "server_cpu": server_cpu,
        "client_cpus": sorted(set(cpus) - {server_cpu}) if server_cpu is not None else cpus,
        "connections": args.connections,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "note": "shared 2-core machine: numbers are noisy; medians of several runs",
        "results": results,
        "targets_records_per_s": {"validated": 100_000, "lean": 300_000},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
