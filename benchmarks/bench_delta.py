"""What `--delta` bookkeeping costs: 1M contacts upserted into `hsbulk sandbox --lean`.

Three imports per round, each a subprocess pinned to core 1 (the sandbox on core 0), from
an empty sandbox: a plain upsert (no delta), a first night with `--delta` (empty state:
every row is new, every confirmed row goes into the state), and an unchanged night (the
same file again: every row diffed against the state, nothing sent). Reports records/s
(rows / wall time of the command) per kind, medians of the rounds, the ratio of each
delta night to the plain import, and writes benchmarks/results/bench_delta.json.
The issue's target: the first night at least 85% of the plain import's throughput.

    .venv/bin/python benchmarks/bench_delta.py [--rows 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_import import ROOT, make_input, measured_run, pin, reset, start_sandbox, write_results

RESULTS = ROOT / "benchmarks" / "results" / "bench_delta.json"


def run_import(source: Path, base_url: str, token: str, cpu: int | None, work: Path,
               *extra: str) -> dict[str, float]:
    summary = work / "summary.json"
    command = [*pin(cpu), sys.executable, "-m", "engine", "import", str(source),
               "--object", "contacts", "--mode", "upsert", "--id-property", "email",
               "--base-url", base_url, "--rate", "none", "--concurrency", "16",
               "--checkpoint", str(work / "cp.db"), "--summary", str(summary), "--quiet",
               *extra]
    result, figures = measured_run(command, token, summary)
    return {**figures, "unchanged": result["unchanged"]}


def one_round(source: Path, base_url: str, token: str, cpu: int | None) -> dict[str, dict]:
    out = {}
    with tempfile.TemporaryDirectory() as plain:
        reset(base_url, token)
        out["plain"] = run_import(source, base_url, token, cpu, Path(plain))
    with tempfile.TemporaryDirectory() as nightly:
        reset(base_url, token)
        state = str(Path(nightly) / "state.db")
        out["first_night"] = run_import(source, base_url, token, cpu, Path(nightly),
                                        "--delta", "--state", state)
        out["unchanged_night"] = run_import(source, base_url, token, cpu, Path(nightly),
                                            "--delta", "--state", state)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    two_cores = (os.cpu_count() or 1) >= 2
    source = make_input(args.rows)
    server, base_url, token = start_sandbox(0 if two_cores else None)
    rounds = []
    try:
        for _ in range(args.runs):
            rounds.append(one_round(source, base_url, token, 1 if two_cores else None))
            print(json.dumps(rounds[-1]), flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        if server.stdout is not None:
            server.stdout.close()
    medians = {kind: statistics.median(r[kind]["records_per_s"] for r in rounds)
               for kind in ("plain", "first_night", "unchanged_night")}
    report = {
        "benchmark": "delta", "rows": args.rows, "rounds": rounds,
        "median_records_per_s": medians,
        "first_night_vs_plain": round(medians["first_night"] / medians["plain"], 3),
        "unchanged_night_vs_plain": round(medians["unchanged_night"] / medians["plain"], 3),
        "target": "each delta night >= 0.85 of the plain import's records/s",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    write_results(RESULTS, report, detail="rounds")


if __name__ == "__main__":
    main()
