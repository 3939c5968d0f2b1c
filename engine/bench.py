"""`hsbulk bench`: synthetic records through the normal import (and export), measured.

The records are made here (no input file is needed): written to a Parquet file in a
temporary folder before the clock starts, then imported with `engine.api.import_file`
exactly as `hsbulk import` imports a user's file (reading, hashing and pre-scanning the
file are measured; making up the records is not); `--export` then reads them back with
`export_objects`. What is measured, per phase: records/s and calls/s over the wall
time of the phase, latency percentiles of every attempt (`client.REQUEST_LOG`), the
requests per rolling window against the allowed rate (from the client's own send times,
and for the sandbox target from the server's audit), retries, 429s, this process's CPU
seconds and its peak RSS. `--target sandbox` starts ``hsbulk sandbox --lean`` as its own
process, so the client's CPU is the client's alone.

Against a real portal (`target` a URL) nothing runs without `yes_write` and the records
created are archived afterwards unless `keep`. Every synthetic record carries the run's
id in its key (``u17@r1a2b3c.bench.example.com``), so nothing else is ever touched.

`write_report` writes ``bench.json`` and, when matplotlib is installed (the ``charts``
extra), three PNG charts; without it, a one-line hint says how to get them.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import anyio
import polars as pl

from engine import __version__
from engine.api import (
    Connection,
    ExportResult,
    ImportOptions,
    RunResult,
    export_objects,
    import_file,
    open_client,
)
from engine.client import REQUEST_LOG
from engine.config import DEFAULT_CONCURRENCY, DEFAULT_RATE, Rate
from engine.errors import ConfigError, EngineError
from engine.outputs import make_folder, open_output, write_json

CHARTS_HINT = ("charts need matplotlib: pip install 'hsbulk[charts]' "
               "(bench.json was written without them)")
WINDOW_S_WITHOUT_LIMIT = 10.0  # the window to count requests in when no rate is set
SERIES_POINTS = 200


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What `hsbulk bench` runs: `target` is ``"sandbox"`` or a base URL."""

    target: str = "sandbox"
    object_type: str = "contacts"
    records: int = 100_000
    mode: Literal["create", "upsert"] = "create"
    rate: str | None = None
    """``"190/10s"`` or ``"none"``; None: none against the sandbox, 100/10s against a URL."""
    concurrency: int = DEFAULT_CONCURRENCY
    latency_ms: float = 0.0
    export: bool = False
    yes_write: bool = False
    keep: bool = False
    token_file: Path | None = None

    def client_rate(self) -> Rate | None:
        if self.rate is not None:
            return Rate.parse_option(self.rate)
        return None if self.is_sandbox else DEFAULT_RATE

    def check(self) -> None:
        self.client_rate()
        if self.records < 1:
            raise ConfigError("--records must be at least 1")
        if self.concurrency < 1:
            raise ConfigError("--concurrency must be at least 1")
        if self.object_type not in SYNTHETIC:
            raise ConfigError(f"bench makes records for {', '.join(SYNTHETIC)}; "
                              f"not {self.object_type!r}")
        if self.mode == "upsert" and SYNTHETIC[self.object_type].id_property is None:
            raise ConfigError(f"{self.object_type} have no unique property to upsert by: "
                              "use --mode create")
        if self.is_sandbox:
            return
        if self.latency_ms:
            raise ConfigError("--latency-ms goes with --target sandbox (it slows the sandbox)")
        if not self.yes_write:
            raise ConfigError(f"bench writes {self.records:,} records to {self.target}: "
                              "add --yes-write-to-this-portal to do so (they are archived "
                              "afterwards unless --keep)")

    @property
    def is_sandbox(self) -> bool:
        return self.target == "sandbox"


# -- synthetic records -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Synthetic:
    """How to make records of one object type: `id_property` None creates by import key."""

    id_property: str | None
    columns: tuple[tuple[str, str], ...]  # (name, template with {n} and {run})


SYNTHETIC = {
    "contacts": Synthetic("email", (
        ("email", "u{n}@r{run}.bench.example.com"), ("firstname", "First{n}"),
        ("lastname", "Last{n}"), ("company", "Company {m}"), ("city", "Springfield"))),
    "companies": Synthetic(None, (
        ("name", "Bench company {n}"), ("domain", "c{n}.r{run}.bench.example.com"),
        ("city", "Springfield"))),
}


def synthetic_frame(object_type: str, records: int, run: str) -> pl.LazyFrame:
    """`records` rows of text columns, made lazily (the import reads them in slices)."""
    n = pl.int_range(0, records, dtype=pl.Int64).cast(pl.String)
    m = (pl.int_range(0, records, dtype=pl.Int64) % 997).cast(pl.String)
    columns = []
    for name, template in SYNTHETIC[object_type].columns:
        parts = template.replace("{run}", run).split("{")
        pieces: list[pl.Expr] = [pl.lit(parts[0])]
        for part in parts[1:]:
            var, _, rest = part.partition("}")
            pieces += [n if var == "n" else m, pl.lit(rest)]
        columns.append(pl.concat_str(pieces).alias(name) if len(pieces) > 1
                       else pl.lit(parts[0]).alias(name))
    return pl.LazyFrame().select(columns)


# -- what the client and the run tell us -------------------------------------------------


@dataclass(slots=True)
class SendLog:
    """Every attempt's send and answer times and status (`client.RequestLog`)."""

    sent: list[float] = field(default_factory=list)
    answered: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    search: list[bool] = field(default_factory=list)

    def record(self, sent_at: float, answered_at: float, status: int, search: bool) -> None:
        self.sent.append(sent_at)
        self.answered.append(answered_at)
        self.statuses.append(status)
        self.search.append(search)

    def latencies_ms(self) -> list[float]:
        return [(b - a) * 1000 for a, b in zip(self.sent, self.answered, strict=True)]


@dataclass(slots=True)
class ProgressLog:
    """Rows settled over time (`report.Progress`), for the throughput series."""

    times: list[float] = field(default_factory=list)
    done: list[int] = field(default_factory=list)

    def start(self, description: str, total: int | None, done_before: int = 0,
              unit: str = "rows") -> None:
        self._add(done_before)

    def update(self, *, done: int, total: int | None, sent: int, rejected: int, retries: int,
               http_429: int, description: str, done_before: int = 0) -> None:
        self._add(done)

    def update_export(self, *, read: int, written: int, parts: int, total: int | None,
                      retries: int, http_429: int, description: str) -> None:
        self._add(read)

    def stop(self) -> None:
        return None

    def _add(self, done: int) -> None:
        self.times.append(time.monotonic())
        self.done.append(done)


@contextlib.contextmanager
def logging_requests(log: SendLog) -> Iterator[None]:
    """Clients created inside report every attempt to `log`."""
    token = REQUEST_LOG.set(log)
    try:
        yield
    finally:
        REQUEST_LOG.reset(token)


# -- figures (pure) ----------------------------------------------------------------------


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (`share` 0..1) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


def latency_figures(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    return {name: _round(percentile(latencies_ms, share), 2)
            for name, share in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))} | {
        "mean": _round(statistics.fmean(latencies_ms), 2) if latencies_ms else None}


def in_window(times: Sequence[float], at: float, window_s: float) -> int:
    """Requests of sorted `times` in the window (at - window_s, at]."""
    return bisect.bisect_right(times, at) - bisect.bisect_right(times, at - window_s)


def quota_figures(sent: Sequence[float], rate: Rate | None,
                  step_s: float = 0.01) -> dict[str, Any]:
    """Requests per rolling window in the steady part (from one window after the first
    send to the last), against the allowed rate.

    `steady_share` is the figure to hold against a target: the limit's window over the
    mean time from a request to the one `limit` requests after it (`steady_share(...)`).
    `mean_share`, the mean of the per-instant rolling counts over the steady part, is
    kept beside it; it depends on where the run ends in its burst cycle."""
    window_s = rate.window_s if rate else WINDOW_S_WITHOUT_LIMIT
    times = sorted(sent)
    figures: dict[str, Any] = {"limit": rate.requests if rate else None,
                               "window_s": window_s, "steady_s": 0.0,
                               "steady_share": None, "mean_share": None, "max_share": None,
                               "max_in_any_window": max(
                                   (in_window(times, t, window_s) for t in times), default=0)}
    if rate and figures["max_in_any_window"]:
        figures["max_share"] = round(figures["max_in_any_window"] / rate.requests, 4)
    if not times or times[-1] - times[0] <= window_s:
        return figures
    start, end = times[0] + window_s, times[-1]
    count = int((end - start) / step_s) + 1
    counts = [in_window(times, start + i * step_s, window_s) for i in range(count)]
    figures["steady_s"] = round(end - start, 2)
    if rate:
        figures["mean_share"] = round(statistics.fmean(counts) / rate.requests, 4)
        figures["steady_share"] = _round(steady_share(times, rate), 4)
    return figures


def steady_share(times: Sequence[float], rate: Rate) -> float | None:
    """The share of the limit used in the steady part, whatever the sends' rhythm:
    W / mean(t[n + R] - t[n]) over the sends n from one window after the first (sorted
    `times`, R requests per W). A window holds R requests exactly when a request and the
    R-th after it are W apart, so this is R requests per W at 1.0.

    A mean of per-instant rolling counts over the same span reads a burst pattern low:
    a limiter that keeps a burst's slots cycles in bursts of R every W + latency, the
    counts fall between bursts, and the span (one window after the first send to the
    last) starts in such a fall and ends on a burst, so it holds one fall more than it
    holds bursts (190/10s, 150 ms jittered latency, 1,500 calls: 98.3% where this reads 98.5%).
    Spacing sends evenly makes both figures agree at the cost of the first window's burst.
    """
    requests = rate.requests
    first = bisect.bisect_left(times, times[0] + rate.window_s) if times else 0
    gaps = [times[n + requests] - times[n] for n in range(first, len(times) - requests)]
    if not gaps:
        return None
    return rate.window_s / statistics.fmean(gaps)


def series(log: SendLog, progress: ProgressLog, started: float, elapsed_s: float,
           window_s: float) -> dict[str, list[float]]:
    """Throughput, requests in flight and requests per rolling window over time."""
    step = max(elapsed_s / SERIES_POINTS, 0.05)
    points = [step * (i + 1) for i in range(max(1, int(elapsed_s / step)))]
    sent = sorted(log.sent)
    rates: list[float] = []
    for t in points:
        before = _done_at(progress, started + t - step)
        rates.append(round((_done_at(progress, started + t) - before) / step, 1))
    return {
        "t_s": [round(t, 3) for t in points],
        "records_per_s": rates,
        "in_flight": mean_in_flight(log, started, step, len(points)),
        "requests_in_window": [in_window(sent, started + t, window_s) for t in points],
    }


def mean_in_flight(log: SendLog, started: float, step: float, bins: int) -> list[float]:
    """Requests in flight, averaged over each bin of `step` seconds (time-weighted)."""
    busy = [0.0] * bins
    for sent, answered in zip(log.sent, log.answered, strict=True):
        low, high = sent - started, answered - started
        first, last = max(0, int(low / step)), min(bins - 1, int(high / step))
        for index in range(first, last + 1):
            overlap = min(high, (index + 1) * step) - max(low, index * step)
            busy[index] += max(0.0, overlap)
    return [round(b / step, 2) for b in busy]


def _done_at(progress: ProgressLog, at: float) -> int:
    index = bisect.bisect_right(progress.times, at)
    return progress.done[index - 1] if index else 0


def histogram(values: Sequence[float], bins: int = 40) -> dict[str, list[float]]:
    """Counts of `values` in equal bins up to the 99.9th percentile (the rest in the last)."""
    if not values:
        return {"edges_ms": [], "counts": []}
    top = percentile(values, 0.999) or max(values)
    width = max(top, 1e-6) / bins
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, int(value / width))] += 1
    return {"edges_ms": [round(width * i, 3) for i in range(bins + 1)],
            "counts": [float(c) for c in counts]}


def phase_figures(log: SendLog, progress: ProgressLog, *, rows: int, started: float,
                  elapsed_s: float, cpu_s: float, rate: Rate | None) -> dict[str, Any]:
    """One phase (import or export) as bench.json gives it."""
    latencies = log.latencies_ms()
    calls = len(log.sent)
    elapsed = max(elapsed_s, 1e-9)
    return {
        "rows": rows, "elapsed_s": round(elapsed_s, 3),
        "records_per_s": round(rows / elapsed, 1),
        "api_calls": calls, "calls_per_s": round(calls / elapsed, 1),
        "search_calls": sum(log.search),
        "http_429": log.statuses.count(429),
        "transport_errors": log.statuses.count(0),
        "latency_ms": latency_figures(latencies),
        "quota": quota_figures(log.sent, rate),
        "client_cpu_s": round(cpu_s, 3),
        "cpu_us_per_record": round(cpu_s / max(rows, 1) * 1e6, 3),
        "series": series(log, progress, started, elapsed_s,
                         rate.window_s if rate else WINDOW_S_WITHOUT_LIMIT),
        "latency_histogram": histogram(latencies),
    }


def rate_of(conn: Connection) -> Rate | None:
    return Rate.parse_option(conn.rate) if isinstance(conn.rate, str) else conn.rate


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def peak_rss_mb() -> float:
    """This process's peak resident set so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


# -- the sandbox as its own process --------------------------------------------------------


@dataclass(slots=True)
class SandboxProcess:
    """``hsbulk sandbox --lean`` in a child process, until `stop`."""

    proc: subprocess.Popen[str]
    base_url: str
    token: str

    @classmethod
    def start(cls, rate: Rate | None, latency_ms: float) -> SandboxProcess:
        command = [sys.executable, "-m", "engine", "sandbox", "--port", "0", "--lean",
                   "--rate", f"{rate.requests}/{rate.window_s:g}s" if rate else "0",
                   "--latency-ms", str(latency_ms)]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, text=True)
        found: dict[str, str] = {}
        assert proc.stdout is not None
        while "base_url" not in found or "token" not in found:
            line = proc.stdout.readline()
            if not line:
                proc.wait(10)
                raise EngineError("the sandbox process exited before serving")
            key, _, value = line.strip().partition("=")
            found[key] = value
        return cls(proc, found["base_url"], found["token"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.asynccontextmanager
async def target_connection(options: BenchOptions) -> AsyncIterator[Connection]:
    """The connection to bench against: a new sandbox process, or the given URL."""
    if not options.is_sandbox:
        yield Connection(base_url=options.target, token_file=options.token_file,
                         rate=options.client_rate(), concurrency=options.concurrency)
        return
    rate = options.client_rate()
    sandbox = SandboxProcess.start(rate, options.latency_ms)
    try:
        yield Connection(base_url=sandbox.base_url, token=sandbox.token, rate=rate,
                         concurrency=options.concurrency)
    finally:
        sandbox.stop()


# -- the run -------------------------------------------------------------------------------


async def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Run the benchmark; return the report (bench.json's content)."""
    options.check()
    run = uuid.uuid4().hex[:8]
    report: dict[str, Any] = {
        "hsbulk": __version__, "machine": machine(),
        "target": "sandbox" if options.is_sandbox else options.target,
        "object": options.object_type, "mode": options.mode, "records": options.records,
        "concurrency": options.concurrency, "latency_ms": options.latency_ms,
    }
    with tempfile.TemporaryDirectory(prefix="hsbulk-bench-") as work:
        async with target_connection(options) as conn:
            report["rate"] = str(conn.rate) if conn.rate else None
            imported, report["import"] = await bench_import(options, conn, Path(work), run)
            if options.export:
                report["export"] = await bench_export(options, conn, Path(work))
            if options.is_sandbox:
                report["server"] = await server_audit(conn)
            elif not options.keep:
                report["archived"] = await archive_created(conn, options.object_type,
                                                           imported)
    report["peak_rss_mb"] = peak_rss_mb()
    report["machine"]["load_avg_1m_end"] = _load_avg()
    return report


async def bench_import(options: BenchOptions, conn: Connection, work: Path,
                       run: str) -> tuple[Path | None, dict[str, Any]]:
    """Import the synthetic records; return the results file and the phase's figures."""
    source = work / "records.parquet"
    await anyio.to_thread.run_sync(
        synthetic_frame(options.object_type, options.records, run).sink_parquet, source)
    import_options = ImportOptions(mode=options.mode,
                                   id_property=SYNTHETIC[options.object_type].id_property)
    results = work / "results.parquet"
    log, progress = SendLog(), ProgressLog()
    cpu, started = time.process_time(), time.monotonic()
    with logging_requests(log):
        result: RunResult = await import_file(
            source, options.object_type, import_options, connection=conn,
            checkpoint=work / "bench.db", results=results, progress=progress,
            raise_on_stop=False)
    elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
    figures = phase_figures(log, progress, rows=result.counts.rows_read, started=started,
                            elapsed_s=elapsed, cpu_s=cpu, rate=rate_of(conn))
    figures |= {"state": str(result.state), "created": result.counts.created,
                "updated": result.counts.updated, "rejected": result.counts.rejected,
                "retries": int(result.total("retries"))}
    return (results if results.exists() else None), figures


async def bench_export(options: BenchOptions, conn: Connection, work: Path) -> dict[str, Any]:
    """Read the object back with the list cursor and search partitions."""
    log, progress = SendLog(), ProgressLog()
    cpu, started = time.process_time(), time.monotonic()
    with logging_requests(log):
        result: ExportResult = await export_objects(
            options.object_type, work / "export", properties=["hs_object_id"],
            connection=conn, checkpoint=work / "export.db", progress=progress,
            raise_on_stop=False)
    elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
    figures = phase_figures(log, progress, rows=result.records_read, started=started,
                            elapsed_s=elapsed, cpu_s=cpu, rate=rate_of(conn))
    return figures | {"state": str(result.state), "records": result.records,
                      "retries": result.retries}


async def server_audit(conn: Connection) -> dict[str, Any]:
    """What the sandbox counted: requests, 429s and its busiest window."""
    async with open_client(replace(conn, rate=None)) as client:
        seen = await client.get_json("/__sandbox/audit")
    window = seen.get("window", {})
    return {"requests": seen.get("requests"), "http_429": seen.get("http_429"),
            "max_accepted_in_any_window": window.get("max_accepted_in_any_window"),
            "window_limit": window.get("limit"), "window_s": window.get("window_s")}


ARCHIVE_BATCH = 100


async def archive_created(conn: Connection, object_type: str,
                          results: Path | None) -> int:
    """Archive the records this run created (ids from its results file); return how many."""
    if results is None:
        return 0
    frame = pl.read_parquet(results, columns=["id", "action"])
    ids = frame.filter(pl.col("action") == "created")["id"].drop_nulls().cast(pl.String)
    path = f"/crm/v3/objects/{object_type}/batch/archive"
    async with open_client(conn) as client:
        for start in range(0, len(ids), ARCHIVE_BATCH):
            chunk = ids[start:start + ARCHIVE_BATCH].to_list()
            await client.post_json(path, {"inputs": [{"id": i} for i in chunk]})
    return len(ids)


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(terse=True), "load_avg_1m_start": _load_avg()}


def _load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


# -- output ------------------------------------------------------------------------------


def write_report(report: dict[str, Any], out: Path) -> tuple[list[Path], str | None]:
    """bench.json and the charts into `out`; return the charts and a hint if none."""
    make_folder(out)
    try:
        charts = write_charts(report, out)
        hint = None
    except ImportError:
        charts, hint = [], CHARTS_HINT
    report["charts"] = [p.name for p in charts]
    write_json(out / "bench.json", report)
    return charts, hint


def write_charts(report: dict[str, Any], out: Path) -> list[Path]:
    """Throughput and requests in flight, requests per window, latency: PNGs in `out`.

    Raises ImportError when matplotlib is not installed."""
    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phase = report["import"]
    data = phase["series"]
    paths = [out / "throughput.png", out / "window.png", out / "latency.png"]
    title = (f"hsbulk import of {report['records']:,} {report['object']} "
             f"({report['target']}, rate {report['rate'] or 'none'})")

    fig, left = plt.subplots(figsize=(8, 4.5))
    left.plot(data["t_s"], data["records_per_s"], color="tab:blue", label="records/s")
    left.set_xlabel("time since start (s)")
    left.set_ylabel("records per second", color="tab:blue")
    right = left.twinx()
    right.plot(data["t_s"], data["in_flight"], color="tab:orange", label="in flight")
    right.set_ylabel("requests in flight", color="tab:orange")
    left.set_title(f"Throughput and requests in flight\n{title}")
    _save(fig, paths[0])

    quota = phase["quota"]
    fig, axes = plt.subplots(figsize=(8, 4.5))
    axes.plot(data["t_s"], data["requests_in_window"], label="requests sent in the window")
    if quota["limit"]:
        axes.axhline(quota["limit"], color="tab:red", linestyle="--",
                     label=f"limit ({quota['limit']} per {quota['window_s']:g} s)")
    axes.set_xlabel("time since start (s)")
    axes.set_ylabel(f"requests in the last {quota['window_s']:g} s")
    axes.set_title(f"Requests per rolling window against the limit\n{title}")
    axes.legend(loc="lower right")
    _save(fig, paths[1])

    hist = phase["latency_histogram"]
    fig, axes = plt.subplots(figsize=(8, 4.5))
    if hist["counts"]:
        edges = hist["edges_ms"]
        axes.bar(edges[:-1], hist["counts"], width=edges[1] - edges[0], align="edge")
    for name, style in (("p50", ":"), ("p95", "--"), ("p99", "-.")):
        value = phase["latency_ms"][name]
        if value is not None:
            axes.axvline(value, color="black", linestyle=style, label=f"{name} {value:g} ms")
    axes.set_xlabel("latency per request (ms)")
    axes.set_ylabel("requests")
    axes.set_title(f"Latency of {phase['api_calls']:,} requests\n{title}")
    axes.legend(loc="upper right")
    _save(fig, paths[2])
    return paths


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        with open_output(path) as handle:
            fig.savefig(handle, format="png", dpi=100)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        plt.close(fig)


def render(report: dict[str, Any]) -> str:
    """A few lines for people: the figures that matter most."""
    lines = [f"hsbulk bench: {report['records']:,} {report['object']} ({report['mode']}) "
             f"against {report['target']}, rate {report['rate'] or 'none'}, "
             f"concurrency {report['concurrency']}"]
    for name in ("import", "export"):
        phase = report.get(name)
        if not phase:
            continue
        lat, quota = phase["latency_ms"], phase["quota"]
        share = (f"{quota['steady_share']:.1%} of the limit (steady)"
                 if quota["steady_share"] is not None else
                 f"max {quota['max_in_any_window']} per {quota['window_s']:g}s")
        lines.append(
            f"  {name}: {phase['records_per_s']:,.0f} records/s, "
            f"{phase['calls_per_s']:,.1f} calls/s, {phase['api_calls']:,} calls, "
            f"window {share}, latency p50/p95/p99 {lat['p50']}/{lat['p95']}/{lat['p99']} ms, "
            f"{phase.get('retries', 0)} retries, {phase['http_429']} 429s, "
            f"CPU {phase['client_cpu_s']:.2f} s ({phase['cpu_us_per_record']:.1f} µs/record)")
    lines.append(f"  peak RSS {report['peak_rss_mb']:,.0f} MB")
    return "\n".join(lines)
