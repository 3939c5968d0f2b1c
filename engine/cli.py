"""argv -> settings -> anyio.run; exit codes by error type.

Exit codes: 0 all rows done; 1 finished with rejected rows; 2 usage/configuration
error; 3 fatal API error; 4 stopped at the daily quota or interrupted (resumable).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path

import anyio

from engine import __version__
from engine.client import HubSpotClient
from engine.config import ClientSettings, Rate, Secret, load_token, resolve_base_url
from engine.dryrun import run_dry
from engine.errors import ConfigError, EngineError
from engine.exporter import (
    ExportSummary,
    add_export_arguments,
    export_spec_from_args,
    run_export,
    write_export_summary,
)
from engine.importer import ImportSpec, run_import, write_outputs
from engine.job import load_job, run_job, write_reports
from engine.mapping import MappingSpec
from engine.normalize import NormalizeOptions
from engine.report import ProgressView, Summary, print_table, render_summaries, write_summary
from engine.schema import Schema, canonical_object, fetch_schema
from engine.source import SourceSpec

log = logging.getLogger("hsbulk")

Command = Callable[[argparse.Namespace], int]


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
    group.add_argument("--concurrency", type=int, default=8,
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


@contextlib.asynccontextmanager
async def connect(args: argparse.Namespace) -> AsyncIterator[HubSpotClient]:
    """A client for the run, with the in-process sandbox when `--sandbox` is given."""
    async with contextlib.AsyncExitStack() as stack:
        if args.sandbox:
            from engine.sandbox import SandboxSettings, running_sandbox

            sandbox = await stack.enter_async_context(running_sandbox(SandboxSettings()))
            base_url, token = sandbox.base_url, Secret(sandbox.token)
            log.info("sandbox serving at %s", base_url)
        else:
            base_url = resolve_base_url(args.base_url)
            token = load_token(args.token_file)
        settings = ClientSettings(
            base_url, token, rate=args.rate, search_rate=args.search_rate,
            concurrency=args.concurrency, read_timeout_s=args.timeout,
            daily_reserve=args.daily_reserve)
        client = await stack.enter_async_context(HubSpotClient(settings))
        yield client


def default_checkpoint(*parts: str) -> Path:
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]
    name = "-".join(p for p in parts[:1] if p) or "job"
    return Path(".hsbulk") / f"{name}-{digest}.db"


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
    group.add_argument("--thousands", default=",", help="thousands separator (default ,)")
    group.add_argument("--decimal", default=".", help="decimal mark (default .)")


def add_import_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "import", help="import a CSV/Parquet/NDJSON file into one object type",
        description="Normalise SOURCE by the portal's property schema and write it with "
        "batch calls, journaled so that a re-run resumes with nothing lost or duplicated.")
    parser.add_argument("source", help="input file or glob (CSV, Parquet, NDJSON)")
    parser.add_argument("--object", required=True, help="object type: name or type id")
    parser.add_argument("--mode", choices=["create", "update", "upsert"], default="upsert")
    parser.add_argument("--id-property", help="unique property that identifies records "
                        "(upsert: required; update: instead of hs_object_id; create: read "
                        "back on resume)")
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
    parser.add_argument("--delimiter", default=",", help="CSV delimiter (default ,)")
    parser.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict",
                        help="invalid UTF-8: stop (default) or replace with U+FFFD")
    parser.add_argument("--results", type=Path, help="per-row results file (.csv/.parquet)")
    parser.add_argument("--rejects", type=Path, help="rejected rows file (.csv/.parquet)")
    parser.add_argument("--dry-run", action="store_true",
                        help="normalise and plan without writing anything to HubSpot")
    parser.add_argument("--emit-normalized", type=Path, metavar="PATH",
                        help="with --dry-run: write the values that would be sent")
    parser.add_argument("--daily-quota", type=int, default=250_000, metavar="N",
                        help="with --dry-run: the daily API quota to plan against "
                        "(default 250,000, the lowest tier)")
    add_normalize_options(parser)
    add_connection_options(parser)
    parser.set_defaults(handler=run_import_command)


def normalize_options(args: argparse.Namespace) -> NormalizeOptions:
    return NormalizeOptions(
        date_order=args.date_order, timezone=args.timezone, dates=args.dates, empty=args.empty,
        on_invalid=args.on_invalid, checkbox=args.checkbox, separators=args.separators,
        thousands=args.thousands, decimal=args.decimal)


def import_spec(args: argparse.Namespace) -> ImportSpec:
    if args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    mapping = MappingSpec.from_flags(args.map, args.mapping,
                                     strict_columns=args.strict_columns,
                                     ignore_unknown=args.ignore_unknown)
    return ImportSpec(
        object_type=canonical_object(args.object),
        source=SourceSpec(args.source, delimiter=args.delimiter,
                          encoding_errors=args.encoding_errors),
        mode=args.mode, id_property=args.id_property, mapping=mapping,
        options=normalize_options(args), on_conflict=args.on_conflict,
        import_key=args.import_key, concurrency=args.concurrency)


def run_import_command(args: argparse.Namespace) -> int:
    spec = import_spec(args)
    if args.emit_normalized is not None and not args.dry_run:
        raise ConfigError("--emit-normalized goes with --dry-run")
    if args.dry_run:
        return run_dry_run(args, spec)
    checkpoint = args.checkpoint or (sandbox_checkpoint("import") if args.sandbox else
                                     default_checkpoint(
        str(spec.object_type), spec.mode, str(Path(args.source).resolve()),
        str(args.base_url or "")))
    progress = ProgressView(quiet=args.quiet)

    async def go() -> tuple[Summary, int]:
        async with connect(args) as client:
            return await run_import(client, checkpoint, spec, progress=progress)

    summary, code = anyio.run(go)
    write_outputs(checkpoint, spec, results=args.results, rejects=args.rejects)
    if args.summary is not None:
        write_summary(args.summary, [summary])
    print_table(render_summaries([summary]), quiet=args.quiet)
    if summary.stop_reason:
        print(f"hsbulk: stopped: {summary.stop_reason}; run the same command again to "
              "resume", file=sys.stderr)
    return code


def run_dry_run(args: argparse.Namespace, spec: ImportSpec) -> int:
    """Read the schema, normalise everything, write rejects/normalized files; send nothing."""

    async def schema() -> Schema:
        async with connect(args) as client:
            return await fetch_schema(client, spec.object_type)

    rate: Rate | None = args.rate
    plan = run_dry(spec.source, anyio.run(schema), spec.mapping, spec.options,
                   rejects_path=args.rejects, normalized_path=args.emit_normalized,
                   rate_per_10s=round(rate.per_s * 10) if rate else 1000,
                   daily_quota=args.daily_quota)
    if not args.quiet:
        print(plan.render())
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
    parser.set_defaults(handler=run_job_command)


def run_job_command(args: argparse.Namespace) -> int:
    job = load_job(args.job)
    if args.checkpoint is not None or args.sandbox:
        job = replace(job, checkpoint=args.checkpoint or sandbox_checkpoint(job.name))
    progress = ProgressView(quiet=args.quiet)

    async def go() -> tuple[list[Summary], int]:
        async with connect(args) as client:
            return await run_job(client, job, progress=progress)

    summaries, code = anyio.run(go)
    reports = args.reports or job.reports
    if reports is not None:
        write_reports(job, reports)
    if args.summary is not None:
        write_summary(args.summary, summaries, job=job.name, exit_code=code)
    print_table(render_summaries(summaries), quiet=args.quiet)
    for summary in summaries:
        if summary.stop_reason:
            print(f"hsbulk: step {summary.step} stopped: {summary.stop_reason}; run the same "
                  "command again to resume", file=sys.stderr)
    return code


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

    async def go() -> ExportSummary:
        async with connect(args) as client:
            return await run_export(client, spec, progress=progress)

    summary = anyio.run(go)
    if args.summary is not None:
        write_export_summary(args.summary, summary)
    if not args.quiet:
        edges = ", ".join(f"{name}: {count:,}" for name, count in summary.edges.items())
        print(f"exported {summary.records:,} {summary.object} records"
              + (f" and edges ({edges})" if edges else "")
              + f" to {summary.out_dir} in {summary.parts:,} part files; "
              f"{summary.api_calls:,} calls ({summary.search_calls:,} search), "
              f"{summary.records_per_s:,.0f} records/s")
    return 0 if summary.state == "done" else 4


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
    try:
        return command(args)
    except EngineError as exc:
        print(f"hsbulk: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("hsbulk: interrupted; run the same command again to resume", file=sys.stderr)
        return 4
