"""The whole benchmark suite in one run: every case a ratio measured in the same run.

Cases (targets of issue 14):
- import_vs_floor: `hsbulk bench` import records/s / a bare aiohttp sender of pre-built
  bodies (benchmarks/floor.py), same records, same lean sandbox process. Target >= 0.6.
- import_vs_official: records/s of the import / `hubspot-api-client` (16 threads of batch
  create), target >= 20; its CPU per record / the import's, target >= 30.
- memory: peak RSS of the import at the large size / at the small one (1M and 10M rows,
  5 columns, lean sandbox), target <= 1.10, and the large one <= 400 MB.
- quota at 0 and 150 ms jittered latency: requests per rolling window in the steady part as
  a share of 190/10s (client send log), target >= 0.985, zero 429s at the server.
- export: records/s of `hsbulk export` (list cursor + search partitions) / one sequential
  list cursor, 50k contacts, 100 ms latency, 100/2s, search 5/s (target >= 1.9); the same
  with search answers taking 1 s and 3 s (>= 1.0) and with search answers carrying the
  window's X-HubSpot-RateLimit-* headers (>= 1.8).

Writes benchmarks/results/suite.json. Each case runs `--runs` times (median reported).

    .venv/bin/python benchmarks/run_all.py [--quick] [--runs 1] [--only import,quota]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from engine.bench import SandboxProcess, synthetic_frame  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "suite.json"
FULL = {"import_records": 500_000, "official_records": 500_000,
        "memory_rows": (1_000_000, 10_000_000), "quota_calls": 1_500, "export_rows": 50_000}
QUICK = {"import_records": 100_000, "official_records": 30_000,
         "memory_rows": (100_000, 1_000_000), "quota_calls": 300, "export_rows": 5_000}


def post(sandbox: SandboxProcess, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(sandbox.base_url + path, data=json.dumps(body).encode(),
                                     method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {sandbox.token}"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        answer.read()


def env_for(sandbox: SandboxProcess) -> dict[str, str]:
    return {**os.environ, "HUBSPOT_ACCESS_TOKEN": sandbox.token}


def run_json(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def hsbulk_bench(*flags: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """`hsbulk bench ... --out TMP` in its own process; its bench.json."""
    with tempfile.TemporaryDirectory(prefix="suite-bench-") as out:
        done = subprocess.run([sys.executable, "-m", "engine", "bench", *flags, "--quiet",
                               "--out", out], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(f"bench {flags} failed ({done.returncode}): "
                               f"{done.stderr[-2000:]}")
        report: dict[str, Any] = json.loads((Path(out) / "bench.json").read_text())
        return report


def import_on(sandbox: SandboxProcess, records: int) -> dict[str, Any]:
    post(sandbox, "/__sandbox/reset", {})
    return hsbulk_bench("--target", sandbox.base_url, "--yes-write-to-this-portal", "--keep",
                        "--records", str(records), "--rate", "none", "--concurrency", "16",
                        env=env_for(sandbox))


def sender_on(sandbox: SandboxProcess, sender: str, records: int) -> dict[str, Any]:
    post(sandbox, "/__sandbox/reset", {})
    return run_json([sys.executable, "benchmarks/floor.py", sender, "--base-url",
                     sandbox.base_url, "--records", str(records)], env_for(sandbox))


def case_import(sizes: dict[str, Any]) -> dict[str, Any]:
    """The import against the floor and against the official client, one sandbox."""
    sandbox = SandboxProcess.start(None, 0.0)
    try:
        floor = sender_on(sandbox, "floor", sizes["import_records"])
        ours = import_on(sandbox, sizes["import_records"])["import"]
        official = sender_on(sandbox, "official", sizes["official_records"])
    finally:
        sandbox.stop()
    return {
        "import_vs_floor": {"ratio": round(ours["records_per_s"] / floor["records_per_s"], 3),
                            "target": 0.6, "import_records_per_s": ours["records_per_s"],
                            "floor_records_per_s": floor["records_per_s"]},
        "import_vs_official": {
            "ratio": round(ours["records_per_s"] / official["records_per_s"], 2),
            "target": 20.0,
            "cpu_ratio": round(official["cpu_us_per_record"] / ours["cpu_us_per_record"], 2),
            "cpu_target": 30.0, "import_records_per_s": ours["records_per_s"],
            "official_records_per_s": official["records_per_s"],
            "import_cpu_us_per_record": ours["cpu_us_per_record"],
            "official_cpu_us_per_record": official["cpu_us_per_record"]},
    }


# `hsbulk import` in a process that reports its own peak RSS on the way out.
RSS_WRAPPER = ("import resource, sys\nfrom engine.cli import main\ncode = main(sys.argv[1:])\n"
               "print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
               "sys.exit(code)")


def import_rss_mb(sandbox: SandboxProcess, rows: int, work: Path) -> float:
    """Peak RSS of `hsbulk import` of a ROWS-row, 5-column CSV file (made once)."""
    source = ROOT / "benchmarks" / "data" / f"bench_contacts_{rows}.csv"
    if not source.exists():
        source.parent.mkdir(parents=True, exist_ok=True)
        synthetic_frame("contacts", rows, "mem").sink_csv(source.with_suffix(".tmp"))
        source.with_suffix(".tmp").rename(source)
    post(sandbox, "/__sandbox/reset", {})
    done = subprocess.run(
        [sys.executable, "-c", RSS_WRAPPER, "import", str(source), "--object", "contacts",
         "--mode", "create", "--id-property", "email", "--base-url", sandbox.base_url,
         "--rate", "none", "--concurrency", "16", "--quiet",
         "--checkpoint", str(work / f"mem-{rows}.db")],
        cwd=ROOT, env=env_for(sandbox), capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"import of {rows} rows failed: {done.stderr[-2000:]}")
    return round(int(done.stdout.split("maxrss_kb")[-1].split()[0]) / 1024, 1)


def case_memory(sizes: dict[str, Any]) -> dict[str, Any]:
    small, large = sizes["memory_rows"]
    sandbox = SandboxProcess.start(None, 0.0)
    try:
        with tempfile.TemporaryDirectory(prefix="suite-memory-") as work:
            rss = {rows: import_rss_mb(sandbox, rows, Path(work)) for rows in (small, large)}
    finally:
        sandbox.stop()
    return {"memory": {"ratio": round(rss[large] / rss[small], 3), "target": 1.10,
                       "small_rows": small, "large_rows": large,
                       "small_peak_rss_mb": rss[small], "large_peak_rss_mb": rss[large],
                       "large_target_mb": 400}}


def case_quota(sizes: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for latency in (0, 150):
        report = hsbulk_bench("--target", "sandbox", "--rate", "190/10s", "--latency-ms",
                              str(latency), "--records", str(sizes["quota_calls"] * 100),
                              "--concurrency", "16")
        quota = report["import"]["quota"]
        out[f"quota_{latency}ms"] = {
            "ratio": quota["steady_share"], "target": 0.985,
            "rolling_mean_share": quota["mean_share"],
            "max_in_any_window": quota["max_in_any_window"],
            "server_max_in_any_window": report["server"]["max_accepted_in_any_window"],
            "server_http_429": report["server"]["http_429"], "target_http_429": 0}
    return out


EXPORT_CASES = {
    "export": ({}, 1.9),
    "export_slow_search": ({"search_latency_ms": 1000.0}, 1.0),
    "export_slower_search": ({"search_latency_ms": 3000.0}, 1.0),
    "export_search_headers": ({"search_window_headers": True}, 1.8),
}


def case_export(sizes: dict[str, Any]) -> dict[str, Any]:
    """Export against one sequential list cursor, on one seeded sandbox, per case."""
    import bench_export  # the list cursor, the export and the seeding live there

    rows = sizes["export_rows"]
    sandbox = bench_export.Sandbox()
    out: dict[str, Any] = {}
    try:
        asyncio.run(bench_export.seed(sandbox, rows, with_companies=True))
        for name, (extra, target) in EXPORT_CASES.items():
            try:
                sandbox.configure(**({"rate_requests": 100, "rate_window_s": 2.0,
                                      "search_rate_per_s": 5.0, "latency_ms": 100.0,
                                      "search_latency_ms": None,
                                      "search_window_headers": False} | extra))
            except urllib.error.HTTPError as exc:  # a sandbox without these options
                out[name] = {"ratio": None, "target": target, "error": str(exc)}
                continue
            out[name] = export_ratio(bench_export, sandbox, rows) | {"target": target}
    finally:
        sandbox.stop()
    return out


def export_ratio(bench_export: Any, sandbox: Any, rows: int) -> dict[str, Any]:
    time.sleep(2.5)  # a fresh window
    count, list_s = asyncio.run(bench_export.list_cursor(sandbox))
    assert count == rows, count
    time.sleep(2.5)
    folder = Path(tempfile.mkdtemp(prefix="suite-export-"))
    try:
        summary, export_s = asyncio.run(bench_export.export(sandbox, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert summary["records"] == rows, summary
    return {"ratio": round(list_s / export_s, 3), "export_s": round(export_s, 2),
            "list_cursor_s": round(list_s, 2), "search_calls": summary["search_calls"],
            "http_429": summary["http_429"]}


CASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "import": case_import, "memory": case_memory, "quota": case_quota,
    "export": case_export}


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each case's figures from the run with the median ratio."""
    merged: dict[str, Any] = {}
    for name in runs[0]:
        ordered = sorted(runs, key=lambda r: (r[name].get("ratio") is None,
                                              r[name].get("ratio") or 0))
        merged[name] = ordered[(len(ordered) - 1) // 2][name] | {
            "runs": [r[name].get("ratio") for r in runs]}
        met = _met(merged[name])
        merged[name]["met"] = met
    return merged


def _met(case: dict[str, Any]) -> bool | None:
    ratio, target = case.get("ratio"), case.get("target")
    if ratio is None:
        return None
    if "target_http_429" in case:
        return ratio >= target and case["server_http_429"] == 0
    if "large_target_mb" in case:
        return ratio <= target and case["large_peak_rss_mb"] <= case["large_target_mb"]
    if "cpu_target" in case:
        return ratio >= target and case["cpu_ratio"] >= case["cpu_target"]
    return bool(ratio >= target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--runs", type=int, default=1, help="runs of each case (median)")
    parser.add_argument("--only", default=",".join(CASES),
                        help=f"cases to run (default all: {','.join(CASES)})")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    load = os.getloadavg()[0]
    results: dict[str, Any] = {}
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        runs = []
        for _ in range(args.runs):
            runs.append(CASES[name](sizes))
            print(json.dumps({name: runs[-1]}), flush=True)
        results |= median_of(runs)
    report = {"suite": "hsbulk", "quick": args.quick, "sizes": sizes, "runs": args.runs,
              "elapsed_s": round(time.perf_counter() - started, 1),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform(terse=True),
                          "load_avg_1m_start": round(load, 2),
                          "load_avg_1m_end": round(os.getloadavg()[0], 2)},
              "cases": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({n: (c["ratio"], c["target"], c["met"]) for n, c in results.items()}))


if __name__ == "__main__":
    main()
