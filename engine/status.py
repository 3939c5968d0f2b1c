"""`hsbulk status [PATH] [--json]`: the journals in a folder (default `.hsbulk/`) or one file.

For each: the command, object or job (and steps), inputs with a short fingerprint, the
state (running: a live process holds it; interrupted: resumable by re-running; done;
abandoned: left by `--restart`), the counts, and the last update. Journals are read
without writing anything; files in the folder that are not journals are skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from rich.table import Table

from engine.errors import CheckpointError, ConfigError
from engine.journal import JournalInfo, describe_journal, journal_kind

log = logging.getLogger("hsbulk.status")

DEFAULT_FOLDER = Path(".hsbulk")
SHORT = 12  # characters of a fingerprint shown
_SIDE_FILES = ("-wal", "-shm", ".lock")


def find_journals(path: Path | None) -> list[JournalInfo]:
    """The journals at `path` (a journal file or a folder of them), oldest change first."""
    if path is None:
        if not DEFAULT_FOLDER.is_dir():
            return []
        path = DEFAULT_FOLDER
    if path.is_dir():
        return sorted(_folder(path), key=lambda info: info.updated_at)
    if not path.exists():
        raise ConfigError(f"{path}: no such journal or folder")
    return [describe_journal(path)]


def _folder(folder: Path) -> list[JournalInfo]:
    found = []
    for item in sorted(folder.iterdir()):
        if item.name.endswith(_SIDE_FILES) or not item.is_file():
            continue
        if journal_kind(item) not in ("steps", "export"):
            continue
        try:
            found.append(describe_journal(item))
        except CheckpointError as exc:
            log.warning("skipped %s: %s", item, exc)
    return found


def _stamp(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def as_json(journals: Sequence[JournalInfo]) -> bytes:
    """A JSON list, one object per journal, for schedulers and scripts."""
    rows: list[dict[str, Any]] = [{
        "path": str(info.path), "command": info.command, "name": info.name,
        "steps": list(info.steps), "state": info.state,
        "inputs": [{"name": i.name, "path": i.path, "fingerprint": i.fingerprint[:SHORT]}
                   for i in info.inputs],
        "rows_read": info.rows_read, "created": info.created, "updated": info.updated,
        "rejected": info.rejected, "exit_code": info.exit_code,
        "updated_at": _stamp(info.updated_at),
    } for info in journals]
    return orjson.dumps(rows, option=orjson.OPT_INDENT_2)


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def as_table(journals: Sequence[JournalInfo]) -> Table:
    table = Table(title="hsbulk journals")
    for name in ("journal", "command", "object/job", "input", "state", "read", "created",
                 "updated", "rejected", "last update"):
        table.add_column(name, justify="right" if name in {"read", "created", "updated",
                                                           "rejected"} else "left")
    for info in journals:
        name = info.name if info.command != "run" else f"{info.name} ({', '.join(info.steps)})"
        inputs = "\n".join(f"{Path(i.path).name} {i.fingerprint[:SHORT]}"
                           for i in info.inputs) or "-"
        table.add_row(info.path.name, info.command, name, inputs, info.state,
                      _count(info.rows_read), _count(info.created), _count(info.updated),
                      _count(info.rejected), _stamp(info.updated_at))
    return table
