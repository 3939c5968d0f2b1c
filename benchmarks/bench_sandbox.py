"""How fast the sandbox takes batch creates: records/s, validated and lean.

Runs `python -m engine sandbox` as a separate process (rate limit off) pinned to the first
core, and drives it from this process, pinned to the other core(s), over several keep-alive
connections with a raw HTTP/1.1 client: pre-encoded batch creates of 100 contacts x 10
properties with unique emails, one request in flight per connection. Every reply must be a
201 and the sandbox must hold every record afterwards.

Per run it reports wall-clock records/s and the CPU both sides used (busy = CPU s / wall s),
plus the server's CPU time per record: on a shared machine the load generator or a neighbour
can hold the server below 100% busy, and then `server_cpu_records_per_s` (records / server CPU
seconds) is the capacity of one core. Medians over the runs go to
benchmarks/results/bench_sandbox.json (or --out).

    .venv/bin/python benchmarks/bench_sandbox.py [--records 200000] [--runs 3]
                                                 [--mode both|validated|lean]
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
import urllib.request
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "bench_sandbox.json"
BATCH = 100
PATH = "/crm/v3/objects/contacts/batch/create"


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


class _Reply:
    """The status line and body length of one HTTP/1.1 response (Content-Length only)."""

    __slots__ = ("body_bytes", "status")

    def __init__(self, status: int, body_bytes: int) -> None:
        self.status = status
        self.body_bytes = body_bytes


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes) -> _Reply:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        raise RuntimeError(f"no Content-Length in {head[:200]!r}")
    length = int(lower[at + 17:lower.index(b"\r\n", at + 2)])
    await reader.readexactly(length)
    return _Reply(status, length)


def request_bytes(host: str, path: str, token: str, body: bytes) -> bytes:
    """A complete pre-encoded keep-alive POST: the client only writes and counts bytes."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def drive(base_url: str, token: str, payloads: list[bytes], connections: int
                ) -> tuple[float, float]:
    """Send every payload over `connections` keep-alive sockets; return (elapsed s, client CPU s).

    A raw HTTP/1.1 client (pre-encoded request bytes, one request in flight per connection)
    keeps the load generator's CPU per request far below the server's.
    """
    host_port = base_url.removeprefix("http://")
    host, _, port = host_port.rpartition(":")
    requests = [request_bytes(host_port, PATH, token, body) for body in payloads]
    queue = list(reversed(requests))
    failures: list[str] = []

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while queue:
                reply = await _exchange(reader, writer, queue.pop())
                if reply.status != 201:
                    failures.append(str(reply.status))
        finally:
            writer.close()
            await writer.wait_closed()

    cpu_before = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    if failures:
        raise RuntimeError(f"{len(failures)} batches failed: {sorted(set(failures))}")
    return elapsed, cpu


def live_contacts(base_url: str, token: str) -> int:
    request = urllib.request.Request(base_url + "/__sandbox/audit",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as resp:  # loopback
        return int(json.loads(resp.read())["records"]["contacts"]["live"])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux), to tell whether the server was the bottleneck."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_mode(lean: bool, records: int, runs: int, connections: int,
               server_cpu: int | None) -> dict[str, object]:
    runs_out: list[dict[str, float]] = []
    for run in range(runs):
        payloads = bodies(run, records)
        proc, base_url, token = start_server(lean, server_cpu)
        try:
            server_before = cpu_seconds(proc.pid)
            elapsed, client_cpu = asyncio.run(drive(base_url, token, payloads, connections))
            server_cpu_s = cpu_seconds(proc.pid) - server_before
            stored = live_contacts(base_url, token)
        finally:
            stop_server(proc)
        sent = len(payloads) * BATCH
        if stored != sent:
            raise RuntimeError(f"sent {sent} contacts, the sandbox holds {stored}")
        runs_out.append({
            "records_per_s": sent / elapsed,
            "server_cpu_busy": server_cpu_s / elapsed,
            "client_cpu_busy": client_cpu / elapsed,
            "server_cpu_us_per_record": server_cpu_s / sent * 1e6,
            "server_cpu_records_per_s": sent / server_cpu_s if server_cpu_s else float("nan"),
        })

    def column(key: str, digits: int) -> list[float]:
        return [round(r[key], digits) for r in runs_out]

    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs_out)

    return {
        "mode": "lean" if lean else "validated",
        "records_per_run": records,
        "runs": runs,
        "records_per_s": column("records_per_s", 0),
        "median_records_per_s": round(median("records_per_s")),
        "server_cpu_busy": column("server_cpu_busy", 2),
        "client_cpu_busy": column("client_cpu_busy", 2),
        "server_cpu_us_per_record": column("server_cpu_us_per_record", 2),
        "median_server_cpu_us_per_record": round(median("server_cpu_us_per_record"), 2),
        "median_server_cpu_records_per_s": round(median("server_cpu_records_per_s")),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--mode", choices=("both", "validated", "lean"), default="both")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu = cpus[0] if len(cpus) >= 2 else None
    if server_cpu is not None:  # the load generator gets the other core(s)
        os.sched_setaffinity(0, set(cpus) - {server_cpu})
    modes = {"both": (False, True), "validated": (False,), "lean": (True,)}[args.mode]
    results = [bench_mode(lean, args.records, args.runs, args.connections, server_cpu)
               for lean in modes]
    report = {
        "benchmark": "sandbox batch create, 100 contacts x 10 properties per request",
        "server_cpu": server_cpu,
        "client_cpus": sorted(set(cpus) - {server_cpu}) if server_cpu is not None else cpus,
        "connections": args.connections,
        "client": "raw HTTP/1.1 keep-alive sockets, pre-encoded requests",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "note": ("shared 2-core machine: wall-clock numbers are noisy, medians of several "
                 "runs; server_cpu_records_per_s = records / server CPU seconds is what one "
                 "core would take if the server had it to itself"),
        "results": results,
        "targets_records_per_s": {"validated": 100_000, "lean": 300_000},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
