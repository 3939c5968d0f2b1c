"""argv -> settings -> the event loop (engine.eventloop); exit codes by error type.

Exit codes: 0 all rows done; 1 finished with rejected rows; 2 usage/configuration
error; 3 fatal API error; 4 stopped at the daily quota or interrupted (resumable).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import orjson

from engine import __version__, bench, eventloop
from engine.api import (
    Connection,
    ExportResult,
    ImportOptions,
    RunResult,
    RunState,
    export_objects,
    file_checkpoint,
    guarded,
    import_file,
    import_spec,
    open_client,
    run_job,
)
from engine.client import HubSpotClient
from engine.config import DEFAULT_CONCURRENCY, Rate, parse_duration_s, resolve_base_url
from engine.dryrun import run_dry
from engine.errors import ConfigError, EngineError, first_error
from engine.exports import ExportSpec
from engine.imports.dedupe import dedupe_for
from engine.imports.delta import default_state_path
from engine.imports.mirror import preview as mirror_preview
from engine.imports.plan import RECORD_ID, ImportSpec, plan_step
from engine.interrupt import PENDING, StopRequest
from engine.job import load_job
from engine.lookups import Lookups, fetch_lookups
from engine.lookups import is_needed as needs_lookups
from engine.mapping import MappingSpec
from engine.normalize import NormalizeOptions
from engine.outputs import refuse_inputs, uses_stdout
from engine.report import ProgressView, print_table, render_summaries
from engine.schema import Schema, canonical_object, fetch_schema
from engine.source import SourceSpec, open_source
from engine.status import as_json as status_json
from engine.status import as_table as status_table
from engine.status import find_journals

log = logging.getLogger("hsbulk")

Command = Callable[[argparse.Namespace], int]
T = TypeVar("T")


def run_async(go: Callable[[StopRequest], Awaitable[T]]) -> T:
    """Run `go` in an event loop where SIGINT/SIGTERM ask it to stop (then force it)."""
    try:
        return eventloop.run(guarded, go, None, True)
    finally:
        PENDING.install()  # the loop put the default handlers back


def _rate(text: str) -> Rate | None:
    try:
        return Rate.parse_option(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """Options common to every command that talks to HubSpot."""
    group = parser.add_argument_group("connection")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--base-url", help="API base URL (default $HUBSPOT_BASE_URL or "
                       "https://api.hubapi.com; plain http only to loopback)")
    where.add_argument("--sandbox", action="store_true",
                       help="run against an in-process sandbox (no HubSpot account needed)")
    group.add_argument("--token-file", type=Path,
                       help="file holding the access token (mode 0600); default "
                       "$HUBSPOT_ACCESS_TOKEN")
    group.add_argument("--rate", type=_rate, default=Rate(100, 10.0), metavar="R/Ws",
                       help="requests per rolling window, e.g. 190/10s, or none "
                       "(default 100/10s, safe for every HubSpot tier)")
    group.add_argument("--search-rate", type=_rate, default=Rate(5, 1.0), metavar="N/s",
                       help="search requests per second (default 5/s)")
    group.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                       help="requests in flight at once (default 8)")
    group.add_argument("--daily-reserve", type=int, default=0, metavar="N",
                       help="stop before the daily quota's remainder drops below N")
    group.add_argument("--timeout", type=float, default=60.0, metavar="S",
                       help="read timeout per request in seconds (default 60)")
    out = parser.add_argument_group("output")
    out.add_argument("--checkpoint", type=Path, help="journal path (default under .hsbulk/)")
    out.add_argument("--summary", type=Path, help="write the summary JSON here")
    noise = out.add_mutually_exclusive_group()
    noise.add_argument("--quiet", action="store_true", help="no progress output")
    noise.add_argument("--verbose", action="store_true", help="debug logging")


def connection_of(args: argparse.Namespace) -> Connection:
    """The connection flags as the API's `Connection`."""
    return Connection(base_url=args.base_url, token_file=args.token_file, rate=args.rate,
                      search_rate=args.search_rate, concurrency=args.concurrency,
                      daily_reserve=args.daily_reserve, timeout_s=args.timeout)


@contextlib.asynccontextmanager
async def connection(args: argparse.Namespace) -> AsyncIterator[Connection]:
    """The run's connection: to the in-process sandbox when `--sandbox` is given."""
    conn = connection_of(args)
    if not args.sandbox:
        yield conn
        return
    from engine.sandbox import SandboxSettings, running_sandbox

    async with running_sandbox(SandboxSettings()) as sandbox:
        log.info("sandbox serving at %s", sandbox.base_url)
        yield replace(conn, base_url=sandbox.base_url, token=sandbox.token)


@contextlib.asynccontextmanager
async def connect(args: argparse.Namespace) -> AsyncIterator[HubSpotClient]:
    """A client for the run (the dry run reads the schema with it)."""
    async with connection(args) as conn, open_client(conn) as client:
        yield client


def add_normalize_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("values")
    group.add_argument("--date-order", choices=["YMD", "DMY", "MDY"],
                       help="order of slashed dates (default: detected when unambiguous)")
    group.add_argument("--timezone", default="UTC", help="zone of naive datetimes (default UTC)")
    group.add_argument("--dates", choices=["iso", "epoch-ms"], default="iso",
                       help="send dates as YYYY-MM-DD (default) or midnight-UTC epoch ms")
    group.add_argument("--empty", choices=["skip", "clear"], default="skip",
                       help="empty cells: omit the property (default) or clear it")
    group.add_argument("--on-invalid", choices=["reject-row", "drop-field"],
                       default="reject-row", help="an invalid value rejects its row "
                       "(default) or is left out")
    group.add_argument("--checkbox", choices=["replace", "append"], default="replace",
                       help="multi-checkbox values replace (default) or add to existing ones")
    group.add_argument("--separators", default=";,|",
                       help="multi-checkbox separators (default ;,|)")
    group.add_argument("--thousands", default=",", help="thousands separator (default ,); "
                       "numbers may carry a currency (€ 4.000, 4 000,50 EUR)")
    group.add_argument("--decimal", default=".", help="decimal mark (default .)")


def add_import_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "import", help="import a CSV/Parquet/NDJSON file into one object type",
        description="Normalise SOURCE by the portal's property schema and write it with "
        "batch calls, journaled so that a re-run resumes with nothing lost or duplicated.")
    parser.add_argument("source", help="input file or glob (CSV, Parquet, NDJSON)")
    parser.add_argument("--object", required=True, help="object type: name or type id")
    parser.add_argument("--mode", choices=["create", "update", "upsert", "archive"],
                        default="upsert",
                        help="archive: archive the records the file names, by record id "
                        "(a 'Record ID' column) or by --id-property; other columns ignored")
    parser.add_argument("--id-property", help="unique property that identifies records "
                        "(upsert: required; update, archive: instead of hs_object_id; "
                        "create: read back on resume)")
    parser.add_argument("--duplicates", choices=["reject", "first", "last"],
                        default="reject",
                        help="rows sharing a key (e-mail, domain, id...): later ones "
                        "rejected DUPLICATE_KEY (default), or only the first or the last "
                        "sent, the others skipped (results action 'skipped')")
    parser.add_argument("--map", action="append", default=[], metavar="COLUMN=PROPERTY",
                        help="map a source column to a property (repeatable)")
    parser.add_argument("--mapping", type=Path, metavar="FILE.toml", help="mapping file")
    parser.add_argument("--strict-columns", action="store_true",
                        help="unmapped source columns are an error")
    parser.add_argument("--ignore-unknown", action="store_true",
                        help="drop mappings to unknown properties instead of failing")
    parser.add_argument("--on-conflict", choices=["reject", "update"], default="reject",
                        help="create mode: a record that already exists is rejected "
                        "(default) or updated")
    parser.add_argument("--import-key", default="hsbulk_import_key",
                        help="create mode: unique property holding hsbulk's row key")
    parser.add_argument("--associate", action="append", default=[],
                        metavar="OBJECT:KEY=COLUMN[:LABEL]",
                        help="link each row's record to the existing OBJECT record whose "
                        "unique property KEY equals the row's COLUMN value, e.g. "
                        "'companies:domain=Company Domain' or, with an association label, "
                        "'companies:domain=Company Domain:Primary' (repeatable; domains are "
                        "matched without scheme, www. or path; a column holding ':' ends "
                        "with ':'); a row whose target does not exist is written and listed "
                        "in the rejects (ASSOCIATION_TARGET_NOT_FOUND)")
    parser.add_argument("--delimiter", default=",", help="CSV delimiter (default ,)")
    parser.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict",
                        help="invalid UTF-8: stop (default) or replace with U+FFFD")
    parser.add_argument("--results", type=Path, help="per-row results file (.csv/.parquet)")
    parser.add_argument("--rejects", type=Path, help="rejected rows file (.csv/.parquet)")
    parser.add_argument("--dry-run", action="store_true",
                        help="normalise and plan without writing anything to HubSpot")
    parser.add_argument("--emit-normalized", type=Path, metavar="PATH",
                        help="with --dry-run: write the values that would be sent")
    parser.add_argument("--delta", nargs="?", const="on", choices=["on", "full-rows",
                                                                   "refresh"],
                        help="send only rows that changed since the state last confirmed "
                        "them, and only their changed properties (full-rows: whole rows; "
                        "refresh: re-send everything and rebuild the state); needs upsert "
                        "or update")
    parser.add_argument("--state", type=Path, metavar="PATH",
                        help="the --delta state (default beside the journal under .hsbulk/, "
                        "by object, key property and portal)")
    parser.add_argument("--verify-sample", type=int, default=0, metavar="N",
                        help="with --delta: read N random unchanged records back and "
                        "re-send those edited in HubSpot since (reported as drifted)")
    parser.add_argument("--mirror", action="store_true",
                        help="with --delta: archive the records (and associations) this "
                        "state wrote that the input no longer holds; with --dry-run: list "
                        "them")
    parser.add_argument("--max-archive", default="5%", metavar="N|P%",
                        help="--mirror refuses (exit 2, nothing archived) above N records "
                        "or P%% of the state's records (default 5%%)")
    parser.add_argument("--daily-quota", type=int, default=250_000, metavar="N",
                        help="with --dry-run: the daily API quota to plan against "
                        "(default 250,000, the lowest tier)")
    add_normalize_options(parser)
    add_connection_options(parser)
    add_restart_option(parser)
    parser.set_defaults(handler=run_import_command)


def normalize_options(args: argparse.Namespace) -> NormalizeOptions:
    return NormalizeOptions(
        date_order=args.date_order, timezone=args.timezone, dates=args.dates, empty=args.empty,
        on_invalid=args.on_invalid, checkbox=args.checkbox, separators=args.separators,
        thousands=args.thousands, decimal=args.decimal)


def import_options(args: argparse.Namespace) -> ImportOptions:
    if args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    return ImportOptions(
        mode=args.mode, id_property=args.id_property, map=dict(parse_maps(args.map)),
        mapping_file=args.mapping, strict_columns=args.strict_columns,
        ignore_unknown=args.ignore_unknown, values=normalize_options(args),
        on_conflict=args.on_conflict, import_key=args.import_key, delimiter=args.delimiter,
        encoding_errors=args.encoding_errors, delta=args.delta or False, state=args.state,
        verify_sample=args.verify_sample,
        mirror=args.mirror, max_archive=args.max_archive, associate=tuple(args.associate),
        duplicates=args.duplicates)


def parse_maps(pairs: Sequence[str]) -> list[tuple[str, str]]:
    """`--map COLUMN=PROPERTY` flags, checked as the mapping reads them."""
    return list(MappingSpec.from_flags(pairs, None).pairs)


def run_import_command(args: argparse.Namespace) -> int:
    options = import_options(args)
    if args.emit_normalized is not None and not args.dry_run:
        raise ConfigError("--emit-normalized goes with --dry-run")
    if args.dry_run and args.mode == "archive":
        raise ConfigError("--dry-run does not apply to --mode archive (try the archive "
                          "against --sandbox)")
    if args.dry_run:
        refuse_inputs([args.results, args.rejects, args.summary, args.emit_normalized],
                      [args.source, args.mapping, args.token_file, args.checkpoint])
        return run_dry_run(args, import_spec(
            args.object, SourceSpec(args.source, delimiter=args.delimiter,
                                    encoding_errors=args.encoding_errors),
            options, args.concurrency))
    checkpoint = args.checkpoint or (sandbox_checkpoint("import") if args.sandbox else None)
    progress = ProgressView(quiet=args.quiet)

    async def go(stop: StopRequest) -> RunResult:
        async with connection(args) as conn:
            return await import_file(
                args.source, args.object, options, connection=conn, checkpoint=checkpoint,
                results=args.results, rejects=args.rejects, summary=args.summary,
                restart=args.restart, progress=progress, stop=stop, raise_on_stop=False)

    result = run_async(go)
    if result.already_complete:
        print(f"hsbulk: {result.already_complete}", file=sys.stderr)
    print_table(render_summaries(result.summaries), quiet=args.quiet,
                stderr=uses_stdout(args.summary, args.results, args.rejects))
    if result.stop_reason:
        print(f"hsbulk: stopped: {result.stop_reason}; run the same command again to "
              "resume", file=sys.stderr)
    return EXIT_CODES[result.state]


EXIT_CODES = {RunState.DONE: 0, RunState.DONE_WITH_REJECTS: 1, RunState.STOPPED: 4}


DRY_RUN_FORMATS = (".csv", ".parquet", ".pq")


def run_dry_run(args: argparse.Namespace, spec: ImportSpec) -> int:
    """Read the schema, normalise everything, write rejects/normalized files; send nothing."""

    async def schema(stop: StopRequest) -> Schema:
        async with connect(args) as client:
            return await fetch_schema(client, spec.object_type)

    emit: Path | None = args.emit_normalized
    if emit is not None and emit.suffix.lower() not in DRY_RUN_FORMATS:
        raise ConfigError(f"--emit-normalized {emit}: name the file "
                          f"{' or '.join(DRY_RUN_FORMATS)}")
    rate: Rate | None = args.rate
    source = open_source(spec.source)
    loaded = run_async(schema)
    step = plan_step(spec, source, loaded)  # every configuration error of the real run

    async def lookups(stop: StopRequest) -> Lookups | None:
        async with connect(args) as client:
            return await fetch_lookups(client, spec.object_type, step.plan)

    found = run_async(lookups) if needs_lookups(spec.object_type, step.plan) else None
    dedupe = dedupe_for(spec, step, loaded, source)
    plan = run_dry(source, loaded, step.mapping, step.options, lookups=found,
                   duplicates=None if dedupe is None else (dedupe, step.keys.prop),
                   rejects_path=args.rejects, normalized_path=args.emit_normalized,
                   rate_per_10s=round(rate.per_s * 10) if rate else 1000,
                   daily_quota=args.daily_quota)
    out = sys.stderr if uses_stdout(args.rejects, args.emit_normalized) else sys.stdout
    if not args.quiet:
        print(plan.render(), file=out)
    if spec.mirror:  # the listing is the point of a mirror dry run: printed even when quiet
        base_url = "" if args.sandbox else resolve_base_url(args.base_url)
        state = spec.state or default_state_path(
            (args.checkpoint or file_checkpoint(spec, args.base_url)).parent, spec.object_name,
            spec.id_property or RECORD_ID, base_url)
        print(mirror_preview(spec, source, step, state), file=out)
    return plan.exit_code


def add_run_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "run", help="run a multi-step migration described by a job file (TOML)",
        description="Run every step of JOB.toml in dependency order (associations after "
        "their targets), journaled as one job: re-run the same command to resume.")
    parser.add_argument("job", type=Path, help="the job file")
    parser.add_argument("--reports", type=Path, metavar="DIR",
                        help="write per-step results and rejects files here")
    add_connection_options(parser)
    add_restart_option(parser)
    parser.set_defaults(handler=run_job_command)


def run_job_command(args: argparse.Namespace) -> int:
    job = load_job(args.job)
    checkpoint = args.checkpoint or (sandbox_checkpoint(job.name) if args.sandbox else None)
    progress = ProgressView(quiet=args.quiet)

    async def go(stop: StopRequest) -> RunResult:
        async with connection(args) as conn:
            return await run_job(job, connection=conn, checkpoint=checkpoint,
                                 reports=args.reports, summary=args.summary,
                                 restart=args.restart, progress=progress, stop=stop,
                                 raise_on_stop=False)

    result = run_async(go)
    if result.already_complete:
        print(f"hsbulk: {result.already_complete}", file=sys.stderr)
    print_table(render_summaries(result.summaries), quiet=args.quiet,
                stderr=uses_stdout(args.summary))
    for summary in result.summaries:
        if summary.stop_reason:
            print(f"hsbulk: step {summary.step} stopped: {summary.stop_reason}; run the same "
                  "command again to resume", file=sys.stderr)
    return EXIT_CODES[result.state]


def parse_since(text: str) -> datetime:
    """ISO 8601 (naive = UTC) or epoch milliseconds."""
    raw = text.strip()
    try:
        if re.fullmatch(r"-?\d{10,}", raw):
            return datetime.fromtimestamp(int(raw) / 1000, UTC)
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--since {text!r} is not an ISO 8601 time or epoch ms") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_duration(text: str) -> timedelta:
    """`10m`, `30s`, `2h`, `1d`, `500ms` (a bare number is seconds)."""
    return timedelta(seconds=parse_duration_s(text, "--lookback"))


def watermark_of(folder: Path) -> datetime:
    """The watermark a previous export wrote into FOLDER/_manifest.json."""
    path = folder / "_manifest.json"
    try:
        manifest = orjson.loads(path.read_bytes())
        return parse_since(str(manifest["watermark"]))
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"--since-manifest: no watermark in {path} ({exc})") from None


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """`export TYPE --out DIR ...` (connection flags, --checkpoint, --summary come apart)."""
    parser.add_argument("object_type", metavar="TYPE",
                        help="object to export: contacts, companies, 0-3, 2-123, ...")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder: DIR/TYPE/part-*.{parquet,csv}, "
                        "DIR/TYPE__TO/ edge tables, DIR/_manifest.json")
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet",
                        help="part file format (default parquet)")
    parser.add_argument("--properties", default="all", metavar="a,b|all",
                        help="properties to export (default all)")
    parser.add_argument("--associations", default="", metavar="companies,deals",
                        help="also write the association edges to these object types")
    since = parser.add_mutually_exclusive_group()
    since.add_argument("--since", metavar="ISO",
                       help="only records modified at or after this time (search-based)")
    since.add_argument("--since-manifest", type=Path, metavar="DIR",
                       help="continue from the watermark of a previous export in DIR")
    parser.add_argument("--lookback", default="0s", metavar="DURATION",
                        help="subtract this from --since, e.g. 10m (default 0)")
    parser.add_argument("--archived", action="store_true",
                        help="export archived records instead of live ones (list only)")
    parser.add_argument("--partitions", type=int, default=4, metavar="N",
                        help="search readers beside the list cursor (default 4; 0: list only)")
    parser.add_argument("--rows-per-part", type=int, default=50_000, metavar="N",
                        help="rows per part file (default 50000; bounds memory)")
    parser.add_argument("--no-escape-formulas", action="store_true",
                        help="CSV: keep cells starting with = + - @ tab CR LF as they are")


def export_spec_from_args(args: argparse.Namespace) -> ExportSpec:
    since = parse_since(args.since) if args.since else None
    if args.since_manifest is not None:
        since = watermark_of(args.since_manifest)
    props = None if args.properties.strip().lower() in ("", "all") else tuple(
        p.strip() for p in args.properties.split(",") if p.strip())
    return ExportSpec(
        object_type=str(canonical_object(args.object_type)), out_dir=args.out,
        format=args.format, properties=props,
        associations=tuple(str(canonical_object(a)) for a in args.associations.split(",")
                           if a.strip()),
        since=since, lookback=parse_duration(args.lookback), archived=args.archived,
        partitions=args.partitions, escape_formulas=not args.no_escape_formulas,
        checkpoint=getattr(args, "checkpoint", None), rows_per_part=args.rows_per_part)


def add_export_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "export", help="export one object type (and its associations) to Parquet/CSV",
        description="Read every record with the list endpoint and search partitions at "
        "once, into part files written atomically; journaled, so a re-run resumes.")
    add_export_arguments(parser)
    add_connection_options(parser)
    parser.set_defaults(handler=run_export_command)


def run_export_command(args: argparse.Namespace) -> int:
    spec = export_spec_from_args(args)
    progress = ProgressView(quiet=args.quiet)

    async def go(stop: StopRequest) -> ExportResult:
        async with connection(args) as conn:
            return await export_objects(
                spec.object_type, spec.out_dir, format=spec.format,
                properties=spec.properties, associations=spec.associations, since=spec.since,
                lookback=spec.lookback, archived=spec.archived, partitions=spec.partitions,
                rows_per_part=spec.rows_per_part, escape_formulas=spec.escape_formulas,
                connection=conn, checkpoint=spec.checkpoint, summary=args.summary,
                progress=progress, stop=stop, raise_on_stop=False)

    result = run_async(go)
    if result.resumable:
        print(f"hsbulk: export stopped ({'; '.join(result.notes) or result.state}) after "
              f"{result.records:,} records in {result.parts:,} part files; run the same "
              "command again to resume", file=sys.stderr)
        return 4
    if not args.quiet:
        edges = ", ".join(f"{name}: {count:,}" for name, count in result.edges.items())
        print(f"exported {result.records:,} {result.object_type} records"
              + (f" and edges ({edges})" if edges else "")
              + f" to {result.out_dir} in {result.parts:,} part files; "
              f"{result.api_calls:,} calls ({result.search_calls:,} search), "
              f"{result.records_per_s:,.0f} records/s",
              file=sys.stderr if uses_stdout(args.summary) else sys.stdout)
    return 0


def add_bench_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "bench", help="measure API throughput with synthetic records",
        description="Make synthetic records, run them through the normal import (and "
        "with --export, the export) and report records/s, calls/s, quota use, latency, "
        "retries, 429s, CPU and memory; --out DIR writes bench.json and charts.")
    parser.add_argument("--target", default="sandbox", metavar="sandbox|URL",
                        help="'sandbox' (default) starts `hsbulk sandbox --lean` as its own "
                        "process; a URL benchmarks that portal (needs "
                        "--yes-write-to-this-portal)")
    parser.add_argument("--object", default="contacts", choices=sorted(bench.SYNTHETIC),
                        help="object type of the synthetic records (default contacts)")
    parser.add_argument("--records", type=int, default=100_000, metavar="N",
                        help="records to import (default 100,000)")
    parser.add_argument("--mode", choices=["create", "upsert"], default="create")
    parser.add_argument("--rate", default=None, metavar="R/Ws",
                        help="requests per rolling window, for the client and the sandbox "
                        "(default: none against the sandbox, 100/10s against a URL)")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                        help=f"requests in flight at once (default {DEFAULT_CONCURRENCY})")
    parser.add_argument("--latency-ms", type=float, default=0.0, metavar="N",
                        help="sandbox: latency per call, arrival to answer (jittered 0.5x-1.5x)")
    parser.add_argument("--export", action="store_true",
                        help="also export the object back (list cursor and search)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="write bench.json and PNG charts (charts need "
                        "'hsbulk[charts]')")
    parser.add_argument("--token-file", type=Path,
                        help="URL target: file holding the access token (mode 0600); "
                        "default $HUBSPOT_ACCESS_TOKEN")
    parser.add_argument("--yes-write-to-this-portal", dest="yes_write", action="store_true",
                        help="URL target: allow writing the synthetic records there")
    parser.add_argument("--keep", action="store_true",
                        help="URL target: keep the records (default: archive them after)")
    parser.add_argument("--quiet", action="store_true", help="no output but errors")
    parser.set_defaults(handler=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    options = bench.BenchOptions(
        target=args.target, object_type=args.object, records=args.records, mode=args.mode,
        rate=args.rate, concurrency=args.concurrency, latency_ms=args.latency_ms,
        export=args.export, yes_write=args.yes_write, keep=args.keep,
        token_file=args.token_file)
    options.check()
    if args.out is not None:
        refuse_inputs([args.out / "bench.json"], [args.token_file])
    report = run_async(lambda stop: bench.run_bench(options))
    hint = None
    if args.out is not None:
        _, hint = bench.write_report(report, args.out)
    if not args.quiet:
        print(bench.render(report))
    if hint is not None:
        print(f"hsbulk: {hint}", file=sys.stderr)
    state = report["import"]["state"]
    return EXIT_CODES[RunState(state)]


def add_restart_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--restart", action="store_true",
                        help="start a new run even if the journal holds an unfinished one "
                        "(abandoned, kept readable) or a finished one of the same input")


def add_status_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "status", help="list journals: command, input, state, counts",
        description="Show each journal in PATH (default .hsbulk/): command, input, state "
        "(running, interrupted, done, abandoned), counts and last update.")
    parser.add_argument("path", nargs="?", type=Path, metavar="PATH",
                        help="a journal file or a folder (default .hsbulk/)")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.set_defaults(handler=run_status_command)


def run_status_command(args: argparse.Namespace) -> int:
    journals = find_journals(args.path)
    if args.json:
        print(status_json(journals).decode())
    else:
        print_table(status_table(journals))
    return 0


def sandbox_checkpoint(name: str) -> Path:
    """The in-process sandbox starts empty every time, so its journal must too."""
    return Path(tempfile.mkdtemp(prefix="hsbulk-")) / f"{name}.db"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hsbulk",
        description="Batch import/export for the HubSpot CRM API.",
        epilog="Exit codes: 0 done; 1 done with rejected rows; 2 usage or configuration "
        "error; 3 fatal API error; 4 stopped (daily quota, interrupt): run it again to resume.",
    )
    parser.add_argument("--version", action="version", version=f"hsbulk {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    add_import_parser(commands)
    add_run_parser(commands)
    add_export_parser(commands)
    add_status_parser(commands)
    add_bench_parser(commands)

    from engine.sandbox import cli as sandbox_cli

    sandbox = commands.add_parser(
        "sandbox", help="run the HubSpot-compatible sandbox server on loopback"
    )
    sandbox_cli.add_arguments(sandbox)
    sandbox.set_defaults(handler=sandbox_cli.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Command | None = getattr(args, "handler", None)
    if command is None:
        parser.print_help()
        return 0
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else
        logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "verbose", False):
        logging.getLogger("aiohttp").setLevel(logging.WARNING)
    PENDING.install()
    code = run_command(command, args)
    if PENDING.count and code in (0, 1):
        print("hsbulk: interrupted; run the same command again to resume", file=sys.stderr)
        return 4
    return code


def run_command(command: Command, args: argparse.Namespace) -> int:
    """Run a command; every error becomes one line on stderr and a documented exit code.

    2: configuration, usage, input or a file hsbulk cannot write; 3: HubSpot refused the
    run, or an error hsbulk did not foresee (the traceback with --verbose); 4: stopped,
    resumable. 1 only ever comes from a run that finished with rejected rows.
    """
    try:
        return command(args)
    except BaseExceptionGroup as group:
        leaf = first_error(group)
        return report_error(leaf if leaf is not None else group)
    except KeyboardInterrupt:
        print("hsbulk: interrupted; run the same command again to resume", file=sys.stderr)
        return 4
    except Exception as exc:
        return report_error(exc)


def report_error(exc: BaseException) -> int:
    if isinstance(exc, EngineError):
        print(f"hsbulk: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        print(f"hsbulk: error:{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    log.debug("unexpected error", exc_info=exc)
    print(f"hsbulk: error: unexpected {type(exc).__name__}: {_one_line(exc)} (run with "
          "--verbose for the traceback)", file=sys.stderr)
    return 3


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")
