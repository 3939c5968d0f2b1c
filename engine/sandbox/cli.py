"""`hsbulk sandbox`: serve the sandbox until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    raise SystemExit("hsbulk sandbox: not built yet")
