"""Normalisation throughput: rows/s over a generated 12-column contacts CSV.

    POLARS_MAX_THREADS=1 .venv/bin/python benchmarks/bench_normalize.py [--rows 1000000] [--runs 3]

Generates the CSV once (cached under benchmarks/data/), reads it into memory as raw text,
then times `normalize` over it in batches (the same batches the source yields), and writes
benchmarks/results/normalize.json. Set POLARS_MAX_THREADS=1 for the one-core figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

import polars as pl

from engine.mapping import MappingSpec, resolve_mapping
from engine.normalize import NormalizeOptions, expressions, normalize
from engine.schema import parse_properties

HERE = Path(__file__).resolve().parent
CASES = HERE.parent / "tests" / "cases"
HEADERS = ["Email", "First Name", "Last Name", "Phone Number", "Date of birth",
           "Last Contacted At", "Newsletter opt-in", "Lifecycle Stage", "Interests",
           "Annual Revenue", "Company Name", "City"]
STAGES = ["Subscriber", "Lead", "Marketing Qualified Lead", "Sales Qualified Lead",
          "Opportunity", "Customer", "evangelist", "other"]
INTERESTS = ["Sports", "Music", "Travel", "Technology", "sports", "tech"]
CITIES = ["Paris", "Lyon", "Berlin", "New York", "São Paulo", "Zürich", "Tokyo", "Leeds"]


def _csv_cell(text: str) -> str:
    if any(c in text for c in ',"\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def generate(path: Path, rows: int, seed: int = 7) -> Path:
    """A contacts CSV with the mix of formats real exports have (about 2% bad values)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
              "Dec"]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as out:
        out.write(",".join(HEADERS) + "\n")
        for i in range(rows):
            y, m, d = rng.randint(1950, 2005), rng.randint(1, 12), rng.randint(1, 28)
            kind = rng.random()
            if kind < 0.4:
                dob = f"{y:04d}-{m:02d}-{d:02d}"
            elif kind < 0.7:
                dob = f"{d:02d}/{m:02d}/{y:04d}"
            elif kind < 0.9:
                dob = f"{d} {months[m - 1]} {y}"
            elif kind < 0.98:
                dob = ""
            else:
                dob = "31/02/1990"
            hh, mm = rng.randint(0, 23), rng.randint(0, 59)
            last = (f"2024-{m:02d}-{d:02d}T{hh:02d}:{mm:02d}:00Z" if rng.random() < 0.6
                    else f"2024-{m:02d}-{d:02d} {hh:02d}:{mm:02d}")
            flag = rng.choice(["Yes", "No", "y", "n", "1", "0", "", "true"])
            stage = rng.choice(STAGES) if rng.random() > 0.01 else "Prospect"
            interests = ", ".join(rng.sample(INTERESTS, rng.randint(0, 3)))
            revenue = f"{rng.randint(0, 9_999_999):,}.{rng.randint(0, 99):02d}"
            cells = [f"user{i}@example.com", f"First{i % 5000}", f"Last{i % 7919}",
                     f"+33 6 {rng.randint(10_000_000, 99_999_999)}", dob, last, flag, stage,
                     interests, revenue, f"Company {i % 1000}", rng.choice(CITIES)]
            out.write(",".join(_csv_cell(c) for c in cells) + "\n")
    tmp.replace(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100_000)
    args = parser.parse_args()
    csv = generate(HERE / "data" / f"contacts_{args.rows}.csv", args.rows)
    schema = parse_properties(json.loads((CASES / "contacts_properties.json").read_text()),
                              "contacts")
    frame = (pl.read_csv(csv, infer_schema=False).with_row_index("source_row", offset=1)
             .rechunk())
    mapping = resolve_mapping(MappingSpec(), [c for c in frame.columns if c != "source_row"],
                              schema)
    plan = expressions(schema, mapping, NormalizeOptions(date_order="DMY"))
    batches = [frame.slice(offset, args.batch).rechunk()
               for offset in range(0, frame.height, args.batch)]
    timings: list[float] = []
    valid_rows = rejected = 0
    for _ in range(args.runs):
        valid_rows = rejected = 0
        started = time.perf_counter()
        for batch in batches:
            valid, rejects = normalize(batch, plan)
            valid_rows += valid.height
            rejected += rejects["source_row"].n_unique()
        timings.append(time.perf_counter() - started)
    median_s = statistics.median(timings)
    result = {
        "benchmark": "normalize",
        "rows": frame.height,
        "columns": len(HEADERS),
        "batch_rows": args.batch,
        "runs_s": [round(t, 3) for t in timings],
        "median_s": round(median_s, 3),
        "rows_per_s": round(frame.height / median_s),
        "target_rows_per_s": 500_000,
        "valid_rows": valid_rows,
        "rejected_rows": rejected,
        "polars_max_threads": os.environ.get("POLARS_MAX_THREADS", "default"),
        "polars": pl.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "note": "2-core shared machine; other developers run jobs concurrently: noisy",
    }
    out = HERE / "results" / "normalize.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
