"""What identifies a run before any call, and what a re-run of a finished one answers.

A run is its command, its spec as given (flags, mapping file, job file: before the portal's
schema is read) and the content of its inputs. The journal keeps the run it holds
(`SqliteCheckpoint.begin_run`); running the same request again after it finished sends
nothing and answers with the stored summary and exit code.

Inputs are identified by a hash of their whole content (not size + mtime): a nightly
file downloaded again with the same bytes is the same input, and one value changed in
the middle of a file is a new one.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from engine.journal import RunInput, RunRecord, RunRequest
from engine.mapping import MappingSpec
from engine.report import Summary
from engine.source import SourceSpec, open_source

if TYPE_CHECKING:
    from engine.imports.plan import ImportSpec
    from engine.job import Job

_CHUNK = 1 << 20


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """sha256 of one file's bytes; cached while its size, mtime and inode stay the same."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def input_digest(spec: SourceSpec) -> str:
    """One digest of the content of every file of an input (in order)."""
    if spec.frame is not None:  # a polars frame: the hash of its content
        return spec.frame.digest()
    h = hashlib.sha256()
    for path in open_source(spec).files:
        info = path.stat()
        h.update(_file_digest(str(path.resolve()), info.st_size, info.st_mtime_ns,
                              info.st_ino).encode())
        h.update(b"\n")
    return h.hexdigest()


def _input(name: str, spec: SourceSpec) -> RunInput:
    where = spec.path if spec.frame is not None else os.path.abspath(spec.path)
    return RunInput(name, where, input_digest(spec))


def _file_hash(path: Path | None) -> str | None:
    """A mapping file's content; None when absent or unreadable (the run reports why)."""
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _mapping(spec: MappingSpec) -> list[Any]:
    return [spec.pairs, _file_hash(spec.file), spec.auto, sorted(spec.reserved),
            spec.strict_columns, spec.ignore_unknown]


def _described(spec: ImportSpec) -> dict[str, Any]:
    source = spec.source
    return {"object": spec.object_type.type_id, "mode": spec.mode, "id": spec.id_property,
            "mapping": _mapping(spec.mapping), "options": repr(spec.options),
            "conflict": spec.on_conflict, "import_key": spec.import_key,
            "batch": spec.batch_size, "step": spec.step,
            "source": [source.format, source.delimiter, source.quote_char,
                       source.encoding_errors],
            **({"duplicates": spec.duplicates} if spec.duplicates != "reject" else {})}


def _digest(described: Any) -> str:
    return hashlib.sha256(orjson.dumps(described)).hexdigest()[:32]


def import_request(spec: ImportSpec) -> RunRequest:
    """`hsbulk import`: the object, the flags and the input file's content."""
    return RunRequest("import", str(spec.object_type), _digest(_described(spec)),
                      (_input(spec.step, spec.source),))


def job_request(job: Job) -> RunRequest:
    """`hsbulk run JOB.toml`: every step as written and every step's input content."""
    described = [[_described(step.spec), repr(step.properties), repr(step.associations)]
                 for step in job.steps]
    return RunRequest("run", job.name, _digest(described),
                      tuple(_input(step.name, step.spec.source) for step in job.steps))


_SUMMARY_FIELDS = frozenset(f.name for f in fields(Summary))


def stored_result(record: RunRecord) -> tuple[list[Summary], int]:
    """The finished run's summaries (as it printed them) and exit code."""
    summaries = [Summary(**{k: v for k, v in data.items() if k in _SUMMARY_FIELDS})
                 for data in record.summaries]
    return summaries, int(record.exit_code or 0)


def complete_message(record: RunRecord, journal: Path) -> str:
    finished = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.updated_at))
    return (f"already complete: this input was run to the end at {finished} (journal "
            f"{journal}); nothing sent. Its summary follows; pass --restart to run it again")
