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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import anyio

from engine import __version__
from engine.client import HubSpotClient
from engine.config import ClientSettings, Rate, Secret, load_token, resolve_base_url
from engine.dryrun import run_dry
from engine.errors import ConfigError, EngineError, SourceError
from engine.exporter import (
    ExportSummary,
    add_export_arguments,
    export_spec_from_args,
    run_export,
    write_export_summary,
)
from engine.importer import ImportSpec, plan_step, run_import, write_outputs
from engine.interrupt import PENDING, StopRequest, watch_signals
from engine.job import job_files, load_job, run_job, write_reports
from engine.journal import completed_run
from engine.mapping import MappingSpec
from engine.normalize import NormalizeOptions
from engine.outputs import refuse_inputs, uses_stdout
from engine.report import ProgressView, Summary, print_table, render_summaries, write_summary
from engine.rerun import complete_message, import_request, job_request, stored_result
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
    stop = StopRequest()

    async def main() -> T:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_signals, stop, PENDING)
            result = await go(stop)
            tg.cancel_scope.cancel()
        return result

    try:
        return anyio.run(main)
    except BaseExceptionGroup as group:  # the task group's wrapping: the error that matters
        leaf = first_error(group)
        if leaf is None:
            raise
        raise leaf from None
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
    add_restart_option(parser)
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
    refuse_inputs([args.results, args.rejects, args.summary, args.emit_normalized],
                  [args.source, args.mapping, args.token_file, args.checkpoint])
    if args.emit_normalized is not None and not args.dry_run:
        raise ConfigError("--emit-normalized goes with --dry-run")
    if args.dry_run:
        return run_dry_run(args, spec)
    checkpoint = args.checkpoint or (sandbox_checkpoint("import") if args.sandbox else
                                     default_checkpoint(
        str(spec.object_type), spec.mode, str(Path(args.source).resolve()),
        str(args.base_url or "")))
    progress = ProgressView(quiet=args.quiet)

    async def go(stop: StopRequest) -> tuple[Summary, int]:
        async with connect(args) as client:
            return await run_import(client, checkpoint, spec, progress=progress, stop=stop,
                                    restart=args.restart)

    done = None if args.restart else completed_run(checkpoint, import_request(spec))
    if done is None:
        try:
            summary, code = run_async(go)
        except SourceError:  # found mid-run: still account for what was written
            if checkpoint.exists():
                with contextlib.suppress(EngineError, OSError):
                    write_outputs(checkpoint, spec, results=args.results, rejects=args.rejects)
            raise
    else:  # the same input ran to the end: no call at all, the stored account
        print(f"hsbulk: {complete_message(done, checkpoint)}", file=sys.stderr)
        (summary,), code = stored_result(done)
    write_outputs(checkpoint, spec, results=args.results, rejects=args.rejects)
    if args.summary is not None:
        write_summary(args.summary, [summary])
    print_table(render_summaries([summary]), quiet=args.quiet,
                stderr=uses_stdout(args.summary, args.results, args.rejects))
    if summary.stop_reason:
        print(f"hsbulk: stopped: {summary.stop_reason}; run the same command again to "
              "resume", file=sys.stderr)
    return code


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
    plan = run_dry(source, loaded, step.mapping, step.options,
                   rejects_path=args.rejects, normalized_path=args.emit_normalized,
                   rate_per_10s=round(rate.per_s * 10) if rate else 1000,
                   daily_quota=args.daily_quota)
    if not args.quiet:
        print(plan.render(), file=sys.stderr if uses_stdout(args.rejects, args.emit_normalized)
              else sys.stdout)
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
    if args.checkpoint is not None or args.sandbox:
        job = replace(job, checkpoint=args.checkpoint or sandbox_checkpoint(job.name))
    written, read = job_files(job, args.reports or job.reports)
    refuse_inputs([args.summary, *written], [*read, args.token_file])
    progress = ProgressView(quiet=args.quiet)

    async def go(stop: StopRequest) -> tuple[list[Summary], int]:
        async with connect(args) as client:
            return await run_job(client, job, progress=progress, stop=stop,
                                 restart=args.restart)

    done = None if args.restart else completed_run(job.checkpoint, job_request(job))
    if done is None:
        summaries, code = run_async(go)
    else:  # the same inputs and job file ran to the end: no call at all
        print(f"hsbulk: {complete_message(done, job.checkpoint)}", file=sys.stderr)
        summaries, code = stored_result(done)
    reports = args.reports or job.reports
    if reports is not None:
        write_reports(job, reports)
    if args.summary is not None:
        write_summary(args.summary, summaries, job=job.name, exit_code=code)
    print_table(render_summaries(summaries), quiet=args.quiet,
                stderr=uses_stdout(args.summary))
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
    refuse_inputs([args.summary], [spec.checkpoint_path, args.token_file])
    progress = ProgressView(quiet=args.quiet)

    async def go(stop: StopRequest) -> ExportSummary:
        async with connect(args) as client:
            return await run_export(client, spec, progress=progress, stop=stop)

    summary = run_async(go)
    if args.summary is not None:
        write_export_summary(args.summary, summary)
    if summary.state != "done":
        print(f"hsbulk: export stopped ({'; '.join(summary.notes) or summary.state}) after "
              f"{summary.records:,} records in {summary.parts:,} part files; run the same "
              "command again to resume", file=sys.stderr)
        return 4
    if not args.quiet:
        edges = ", ".join(f"{name}: {count:,}" for name, count in summary.edges.items())
        print(f"exported {summary.records:,} {summary.object} records"
              + (f" and edges ({edges})" if edges else "")
              + f" to {summary.out_dir} in {summary.parts:,} part files; "
              f"{summary.api_calls:,} calls ({summary.search_calls:,} search), "
              f"{summary.records_per_s:,.0f} records/s",
              file=sys.stderr if uses_stdout(args.summary) else sys.stdout)
    return 0


def add_restart_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--restart", action="store_true",
                        help="start a new run even if the journal holds an unfinished one "
                        "(abandoned, kept readable) or a finished one of the same input")


def add_status_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "status", help="list journals: command, input, state, counts",
        description="Show the journals in PATH (a journal file, or a folder of them; default "
        ".hsbulk/): command, object or job, input and fingerprint, state (running, "
        "interrupted, done, abandoned), counts and last update.")
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


def first_error(group: BaseExceptionGroup[BaseException]) -> Exception | None:
    """The error that matters in a task group's failure: an EngineError first."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        item = pending.pop(0)
        if isinstance(item, BaseExceptionGroup):
            pending.extend(item.exceptions)
        else:
            leaves.append(item)
    for leaf in leaves:
        if isinstance(leaf, EngineError):
            return leaf
    return next((leaf for leaf in leaves if isinstance(leaf, Exception)), None)


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
