"""argv -> settings -> anyio.run; exit codes by error type.

Exit codes: 0 all rows done; 1 finished with rejected rows; 2 usage/configuration
error; 3 fatal API error; 4 stopped at the daily quota or interrupted (resumable).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from engine import __version__
from engine.errors import EngineError

log = logging.getLogger("hsbulk")

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hsbulk",
        description="Batch import/export for the HubSpot CRM API.",
    )
    parser.add_argument("--version", action="version", version=f"hsbulk {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

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
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return command(args)
    except EngineError as exc:
        print(f"hsbulk: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("hsbulk: interrupted", file=sys.stderr)
        return 4
