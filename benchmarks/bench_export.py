"""Export benchmark against a sandbox process; writes benchmarks/results/bench_export.json.

(a) 50,000 contacts (10 properties) with company associations, sandbox at 100 ms latency,
    window 100/2s, search 5/s: records/s of `run_export` (list cursor + search partitions,
    edges included) against one sequential list cursor (with `associations=companies`
    inline, so it also gets the edges), each ratio measured in the same run, in these cases:
    `quota` (as above; target >= 1.9x), `slow_search`, `slower_search` and
    `slowest_search` (search answers take 1 s, 3 s and 10 s, 10x to 100x the list's latency;
    target >= 1.0x: the list cursor never waits for search) and `search_window_headers`
    (search answers carry the 10-second window's `X-HubSpot-RateLimit-*` headers; target
    >= 1.8x).
(b) 1,000,000 contacts (10 properties), no limits, no latency: records/s and peak RSS of
    the export in a subprocess (ru_maxrss of that process). Target <= 400 MB.

    .venv/bin/python benchmarks/bench_export.py [--runs 3] [--big-rows 1000000] [--skip-big]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.client import HubSpotClient  # noqa: E402
from engine.config import ClientSettings, Rate, Secret  # noqa: E402
from engine.exports import ExportSpec, run_export  # noqa: E402

PROPS = ("email", "firstname", "lastname", "city", "phone", "jobtitle", "company",
         "date_of_birth", "hs_email_optout", "lifecyclestage")
STAGES = ("lead", "customer", "subscriber", "opportunity")


class Sandbox:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "sandbox", "--port", "0", "--rate", "0",
             "--search-rate", "0"], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True)
        self.base_url = self.token = ""
        assert self.proc.stdout is not None
        while not (self.base_url and self.token):
            line = self.proc.stdout.readline()
            assert line, "sandbox exited"
            key, _, value = line.strip().partition("=")
            if key == "base_url":
                self.base_url = value
            elif key == "token":
                self.token = value

    def configure(self, **settings: object) -> None:
        request = urllib.request.Request(self.base_url + "/__sandbox/config",
                                         data=json.dumps(settings).encode(), method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            answer.read()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def record(i: int, company: str | None) -> dict:
    item: dict = {"properties": {
        "email": f"person{i}@example.com", "firstname": f"First{i}", "lastname": f"Last{i}",
        "city": f"City {i % 97}", "phone": f"+1 555 {i:07d}", "jobtitle": "Engineer",
        "company": f"Company {i % 500}", "date_of_birth": f"1980-01-{i % 28 + 1:02d}",
        "hs_email_optout": "true" if i % 2 else "false", "lifecyclestage": STAGES[i % 4]}}
    if company is not None:
        item["associations"] = [{"to": {"id": company}, "types": [
            {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]}]
    return item


async def seed(sandbox: Sandbox, rows: int, with_companies: bool) -> None:
    headers = {"Authorization": f"Bearer {sandbox.token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:

        async def post(path: str, body: dict) -> dict:
            async with session.post(sandbox.base_url + path, data=orjson.dumps(body),
                                    headers=headers) as answer:
                data = await answer.read()
                assert answer.status < 300, data[:300]
                return orjson.loads(data)

        companies: list[str] = []
        if with_companies:
            for start in range(0, 1000, 100):
                answer = await post("/crm/v3/objects/companies/batch/create", {"inputs": [
                    {"properties": {"name": f"Co {i}", "domain": f"co{i}.example"}}
                    for i in range(start, start + 100)]})
                companies += [r["id"] for r in answer["results"]]
        queue = list(range(0, rows, 100))

        async def worker() -> None:
            while queue:
                start = queue.pop()
                await post("/crm/v3/objects/contacts/batch/create", {"inputs": [
                    record(i, companies[i % len(companies)] if companies else None)
                    for i in range(start, min(rows, start + 100))]})

        await asyncio.gather(*(worker() for _ in range(8)))


def settings(sandbox: Sandbox, rate: Rate | None, search: Rate | None) -> ClientSettings:
    return ClientSettings(sandbox.base_url, Secret(sandbox.token), rate=rate,
                          search_rate=search, concurrency=16)


async def list_cursor(sandbox: Sandbox) -> tuple[int, float]:
    """One sequential list cursor, associations inline: the baseline."""
    started = time.perf_counter()
    count = 0
    after: str | None = None
    async with HubSpotClient(settings(sandbox, Rate(100, 2.0), Rate(5, 1.0))) as client:
        while True:
            params: dict[str, str | int] = {"limit": 100, "properties": ",".join(PROPS),
                                            "associations": "companies"}
            if after:
                params["after"] = after
            data = await client.get_json("/crm/v3/objects/contacts", params)
            count += len(data["results"])
            after = ((data.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                break
    return count, time.perf_counter() - started


async def export(sandbox: Sandbox, out: Path) -> tuple[dict, float]:
    spec = ExportSpec("contacts", out, properties=PROPS, associations=("companies",),
                      checkpoint=out / "journal.db")
    started = time.perf_counter()
    async with HubSpotClient(settings(sandbox, Rate(100, 2.0), Rate(5, 1.0))) as client:
        summary = await run_export(client, spec)
    return summary.as_dict(), time.perf_counter() - started


# case -> (sandbox settings on top of the quota's, target ratio)
CASES: dict[str, tuple[dict[str, object], float]] = {
    "quota": ({}, 1.9),
    "slow_search": ({"search_latency_ms": 1000.0}, 1.0),
    "search_window_headers": ({"search_window_headers": True}, 1.8),
    "slower_search": ({"search_latency_ms": 3000.0}, 1.0),
    # not run by default: a search 100x slower than the list must not cost anything either
    "slowest_search": ({"search_latency_ms": 10000.0}, 1.0),
}
DEFAULT_CASES = ("quota", "slow_search", "slower_search", "search_window_headers")
QUOTA = {"rate_requests": 100, "rate_window_s": 2.0, "search_rate_per_s": 5.0,
         "latency_ms": 100.0, "search_latency_ms": None, "search_window_headers": False}


def bench_quota(runs: int, rows: int, cases: list[str]) -> dict[str, dict]:
    """Per run: one list cursor, then the export in every case, so each ratio is measured
    in the same run as its baseline (the list cursor never searches: search settings do
    not change it)."""
    sandbox = Sandbox()
    try:
        asyncio.run(seed(sandbox, rows, with_companies=True))
        base: list[float] = []
        ours: dict[str, list[float]] = {case: [] for case in cases}
        details: dict[str, list[dict]] = {case: [] for case in cases}
        for run in range(runs):
            sandbox.configure(**QUOTA)
            time.sleep(2.5)  # a fresh window
            count, base_s = asyncio.run(list_cursor(sandbox))
            assert count == rows, count
            base.append(rows / base_s)
            for case in cases:
                sandbox.configure(**{**QUOTA, **CASES[case][0]})
                time.sleep(2.5)
                out = Path(tempfile.mkdtemp(prefix="bench-export-"))
                try:
                    summary, ours_s = asyncio.run(export(sandbox, out))
                finally:
                    shutil.rmtree(out, ignore_errors=True)
                assert summary["records"] == rows, summary
                ours[case].append(rows / ours_s)
                details[case].append({
                    "run": run, "export_s": round(ours_s, 2), "list_cursor_s": round(base_s, 2),
                    "ratio": round(ours[case][-1] / base[-1], 3),
                    **{k: summary[k] for k in ("api_calls", "search_calls", "list_calls",
                                               "association_calls", "http_429", "splits",
                                               "edges")}})
                print(f"{case} run {run}: export {ours[case][-1]:,.0f} rec/s, list cursor "
                      f"{base[-1]:,.0f} rec/s, ratio {ours[case][-1] / base[-1]:.2f}",
                      flush=True)
        return {case: {
            "rows": rows, "sandbox": "100 ms latency, 100/2s window, search 5/s"
            + "".join(f", {k}={v}" for k, v in CASES[case][0].items()),
            "export_records_per_s_median": round(statistics.median(ours[case]), 1),
            "list_cursor_records_per_s_median": round(statistics.median(base), 1),
            "ratio_median": round(statistics.median(
                [o / b for o, b in zip(ours[case], base, strict=True)]), 3),
            "target_ratio": CASES[case][1], "runs": details[case]} for case in cases}
    finally:
        sandbox.stop()


def bench_big(runs: int, rows: int, partitions: int) -> dict:
    sandbox = Sandbox()
    try:
        started = time.perf_counter()
        asyncio.run(seed(sandbox, rows, with_companies=False))
        seeded_s = time.perf_counter() - started
        env = {**os.environ, "HUBSPOT_ACCESS_TOKEN": sandbox.token}
        rates, rss = [], []
        for run in range(runs):
            out = Path(tempfile.mkdtemp(prefix="bench-export-big-"))
            try:
                # `hsbulk export`, in a process that reports its own peak RSS on the way out.
                code = ("import resource, sys\nfrom engine.cli import main\n"
                        "code = main(sys.argv[1:])\n"
                        "print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
                        "sys.exit(code)")
                done = subprocess.run(
                    [sys.executable, "-c", code, "export", "contacts", "--out", str(out),
                     "--properties", ",".join(PROPS), "--base-url", sandbox.base_url,
                     "--rate", "none", "--search-rate", "none",
                     "--partitions", str(partitions), "--summary", str(out / "summary.json")],
                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
                assert done.returncode == 0, done.stderr[-2000:]
                summary = orjson.loads((out / "summary.json").read_bytes())
                assert summary["records"] == rows, summary
                rss_mb = int(done.stdout.split("maxrss_kb")[-1].split()[0]) / 1024
                rates.append(summary["records_per_s"])
                rss.append(rss_mb)
                print(f"1M run {run}: {summary['records_per_s']:,.0f} rec/s, "
                      f"{summary['elapsed_s']:.1f}s, peak RSS {rss_mb:,.0f} MB", flush=True)
            finally:
                shutil.rmtree(out, ignore_errors=True)
        return {"rows": rows, "partitions": partitions, "seed_s": round(seeded_s, 1),
                "records_per_s_median": round(statistics.median(rates), 1),
                "peak_rss_mb_median": round(statistics.median(rss), 1),
                "peak_rss_mb_max": round(max(rss), 1), "target_rss_mb": 400,
                "records_per_s": rates, "peak_rss_mb": [round(r, 1) for r in rss]}
    finally:
        sandbox.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--big-rows", type=int, default=1_000_000)
    parser.add_argument("--big-runs", type=int, default=2)
    parser.add_argument("--big-partitions", type=int, default=0,
                        help="search readers in (b); 0 because the sandbox's search scans "
                        "every record per call (about 1 s at 1M), which would stall the list")
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES),
                        help=f"comma-separated export cases of (a): {', '.join(CASES)}")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                        "bench_export.json")
    args = parser.parse_args()
    result: dict = {"machine_cores": os.cpu_count()}
    result.update(bench_quota(args.runs, args.rows, args.cases.split(",")))
    if not args.skip_big:
        result["big"] = bench_big(args.big_runs, args.big_rows, args.big_partitions)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
