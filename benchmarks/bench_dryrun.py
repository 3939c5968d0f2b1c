"""Dry-run wall time and peak RSS over 1M and 5M rows, each in its own subprocess.

    .venv/bin/python benchmarks/bench_dryrun.py [--runs 3]

The 5M input is a glob of five copies (symlinks) of the 1M file, read as one source.
Each child runs `run_dry` (rejects CSV + normalized Parquet) and reports its own
`ru_maxrss` (peak RSS of the whole process: interpreter, libraries, reader, normaliser and
writers) and its CPU time; results go to benchmarks/results/dryrun.json. Targets: peak RSS
<= 400 MB, 5M RSS within 10% of 1M.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(source: str) -> None:
    from engine.dryrun import run_dry
    from engine.mapping import MappingSpec
    from engine.normalize import NormalizeOptions
    from engine.schema import parse_properties
    from engine.source import SourceSpec

    cases = HERE.parent / "tests" / "cases"
    schema = parse_properties(json.loads((cases / "contacts_properties.json").read_text()),
                              "contacts")
    with tempfile.TemporaryDirectory() as tmp:
        started, started_cpu = time.perf_counter(), time.process_time()
        plan = run_dry(SourceSpec(source), schema, MappingSpec(),
                       NormalizeOptions(date_order="DMY"),
                       rejects_path=Path(tmp) / "rejects.csv",
                       normalized_path=Path(tmp) / "normalized.parquet",
                       rate_per_10s=190, daily_quota=1_000_000)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - started_cpu
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": plan.rows_read, "valid": plan.rows_valid,
                      "rejected": plan.rows_rejected, "wall_s": elapsed, "cpu_s": cpu,
                      "peak_rss_mb": peak_kib / 1024}))


def measure(source: str) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = subprocess.run([sys.executable, __file__, "--child", source], check=True,
                         capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    result["children_maxrss_mb"] = max(before, resource.getrusage(
        resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    sys.path.insert(0, str(HERE))
    from bench_normalize import generate

    one = generate(HERE / "data" / "contacts_1000000.csv", 1_000_000)
    five_dir = HERE / "data" / "glob5m"
    five_dir.mkdir(parents=True, exist_ok=True)
    for i in range(5):
        link = five_dir / f"part-{i}.csv"
        if not link.exists():
            link.symlink_to(one)
    inputs = {"1M": str(one), "5M": str(five_dir / "part-*.csv")}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in inputs}
    for _ in range(args.runs):
        for name, source in inputs.items():
            runs[name].append(measure(source))
    summary = {
        name: {
            "rows": results[0]["rows"],
            "wall_s_median": round(statistics.median(r["wall_s"] for r in results), 2),
            "rows_per_s_median": round(results[0]["rows"]
                                       / statistics.median(r["wall_s"] for r in results)),
            "cpu_s_median": round(statistics.median(r["cpu_s"] for r in results), 2),
            "peak_rss_mb_median": round(statistics.median(r["peak_rss_mb"] for r in results), 1),
            "runs": results,
        }
        for name, results in runs.items()
    }
    one_rss = summary["1M"]["peak_rss_mb_median"]
    five_rss = summary["5M"]["peak_rss_mb_median"]
    result = {
        "benchmark": "dryrun",
        **summary,
        "rss_5m_over_1m": round(five_rss / one_rss, 3),
        "targets": {"peak_rss_mb": 400, "rss_5m_over_1m_max": 1.10},
        "polars_max_threads": os.environ.get("POLARS_MAX_THREADS", "default"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "note": "2-core shared machine; other developers run jobs concurrently: noisy",
    }
    out = HERE / "results" / "dryrun.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
