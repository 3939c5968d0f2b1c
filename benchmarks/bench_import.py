"""End-to-end import throughput: 1M contacts into `hsbulk sandbox --lean`, no rate limit.

The sandbox runs as its own process pinned to core 0; `hsbulk import` runs as a
subprocess pinned to core 1 (when the machine has two). Each run starts from an empty
sandbox and a new checkpoint. Reports records/s (rows / wall time of the import command,
start-up included) and the import's peak RSS, median of the runs, and writes
benchmarks/results/bench_import.json. With --profile, one more run under cProfile prints
the top functions by cumulative and internal time.

    .venv/bin/python benchmarks/bench_import.py [--rows 1000000] [--runs 3] [--profile]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "bench_import.json"
STAGES = ["Lead", "Subscriber", "Marketing Qualified Lead", "Customer"]


def make_input(rows: int) -> Path:
    path = DATA / f"import_contacts_{rows}.csv"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    with temp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Email", "First Name", "Last Name", "Phone Number", "Company Name",
                         "City", "Lifecycle Stage", "Date of birth", "Unsubscribed",
                         "Job Title"])
        for n in range(rows):
            writer.writerow([f"user{n}@bench.example.com", f"First{n}", f"Last{n}",
                             f"+1555{n:07d}", f"Company {n % 997}", "Springfield",
                             STAGES[n % 4], f"19{50 + n % 50}-0{1 + n % 9}-1{n % 9}",
                             "yes" if n % 3 else "no", "Engineer"])
    temp.rename(path)
    return path


def pin(cpu: int | None) -> list[str]:
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return []
    return ["taskset", "-c", str(cpu)] if _has_taskset() else []


def _has_taskset() -> bool:
    return subprocess.run(["which", "taskset"], capture_output=True).returncode == 0


def start_sandbox(cpu: int | None) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [*pin(cpu), sys.executable, "-m", "engine", "sandbox", "--port", "0", "--rate", "0",
         "--lean"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    base_url = token = ""
    while not (base_url and token):
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the sandbox did not start")
        key, _, value = line.strip().partition("=")
        base_url = value if key == "base_url" else base_url
        token = value if key == "token" else token
    return proc, base_url, token


def reset(base_url: str, token: str) -> None:
    request = urllib.request.Request(base_url + "/__sandbox/reset", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {token}"})
    urllib.request.urlopen(request, timeout=60).read()


def run_import(source: Path, base_url: str, token: str, cpu: int | None,
               profile: Path | None = None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as work:
        summary = Path(work) / "summary.json"
        prefix = [sys.executable] if profile is None else [
            sys.executable, "-m", "cProfile", "-o", str(profile)]
        command = [*pin(cpu), *prefix, "-m", "engine", "import", str(source),
                   "--object", "contacts", "--mode", "create", "--id-property", "email",
                   "--base-url", base_url, "--rate", "none", "--concurrency", "16",
                   "--checkpoint", str(Path(work) / "cp.db"), "--summary", str(summary),
                   "--quiet"]
        result, figures = measured_run(command, token, summary)
    return {**figures, "pipeline_records_per_s": result["records_per_s"]}


def measured_run(command: list[str], token: str, summary: Path) -> tuple[dict, dict]:
    """Run one `hsbulk import` command: its summary JSON, and wall time, records/s, CPU
    and peak RSS of the process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HUBSPOT_ACCESS_TOKEN": token})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"import failed ({done.returncode}): {done.stderr[-2000:]}")
    result = json.loads(summary.read_text())
    return result, {"wall_s": round(wall, 3), "rows": result["rows_read"],
                    "records_per_s": round(result["rows_read"] / wall, 1),
                    "cpu_s": round((after.ru_utime + after.ru_stime)
                                   - (before.ru_utime + before.ru_stime), 3),
                    "peak_rss_mb": round(after.ru_maxrss / 1024, 1),
                    "api_calls": result["api_calls"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    two_cores = (os.cpu_count() or 1) >= 2
    source = make_input(args.rows)
    server, base_url, token = start_sandbox(0 if two_cores else None)
    runs = []
    try:
        for _ in range(args.runs):
            reset(base_url, token)
            runs.append(run_import(source, base_url, token, 1 if two_cores else None))
            print(json.dumps(runs[-1]), flush=True)
        if args.profile:
            reset(base_url, token)
            stats_path = DATA / "import.prof"
            run_import(source, base_url, token, 1 if two_cores else None, stats_path)
            import pstats

            stats = pstats.Stats(str(stats_path))
            stats.sort_stats("cumulative").print_stats(25)
            stats.sort_stats("tottime").print_stats(20)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        if server.stdout is not None:
            server.stdout.close()
    report = {
        "benchmark": "import", "rows": args.rows, "runs": runs,
        "median_records_per_s": statistics.median(r["records_per_s"] for r in runs),
        "median_peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
        "targets": {"records_per_s": 120_000, "peak_rss_mb": 500},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    write_results(RESULTS, report, detail="runs")


def write_results(path: Path, report: dict, *, detail: str) -> None:
    """The JSON report to `path`; the figures (all but the `detail` list) to stdout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != detail}, indent=2))


if __name__ == "__main__":
    main()
