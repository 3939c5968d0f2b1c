"""The crash-safe journal: the only user of sqlite3.

Protocol (see ARCHITECTURE.md, "Checkpoint and exactly-once"):

1. a batch is committed IN_FLIGHT, with its source rows and keys, before its request
   leaves;
2. on an answer it becomes DONE with the per-row outcome (ids, rejects) in one
   transaction;
3. on resume, DONE batches are skipped and IN_FLIGHT ones are reconciled before
   anything is resent.

WAL mode with `synchronous=FULL`; the folder is 0700 and the files 0600. Writes are
grouped: `apply(ops)` runs any number of transitions in one transaction, so one fsync
covers every batch that finished meanwhile. Only row numbers and keys are stored, never
whole rows, and never the access token.

A journal holds one run (`run` table: its command, inputs and state RUNNING -> DONE |
ABANDONED). A finished run of the same request is not run again (`begin_run` returns it);
a run of another input archives the journal beside itself (`NAME.<started>.db`), so a
nightly file needs no new `--checkpoint` and every earlier run stays readable. The
process that writes a journal holds an `fcntl.flock` on `<journal>.lock`, which tells a
running journal from an interrupted one. An existing file that is not an hsbulk journal
is refused before anything touches it.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote

import anyio
import anyio.to_thread
import orjson

from engine.errors import CheckpointError

SCHEMA_VERSION = 2

_DDL = """
begin;
create table if not exists meta (key text primary key, value text not null);
create table if not exists job (
    key text primary key, spec_hash text not null, fingerprints text not null,
    state text not null, created_at real not null, updated_at real not null);
create table if not exists batches (
    step text not null, seq integer not null, state text not null,
    first_row integer not null, last_row integer not null, rows blob not null,
    keys blob, attempts integer not null default 0, started_at real,
    results blob, created integer not null default 0, updated integer not null default 0,
    unchanged integer not null default 0,
    primary key (step, seq)) without rowid;
create table if not exists rejects (
    step text not null, source_row integer not null, col text not null, code text not null,
    value text, message text not null, counted integer not null,
    primary key (step, source_row, col, code)) without rowid;
create table if not exists idmap (
    object text not null, prop text not null, key text not null, id text not null,
    primary key (object, prop, key)) without rowid;
create table if not exists run (
    id integer primary key check (id = 1), command text not null, name text not null,
    spec_hash text not null, inputs text not null, state text not null,
    summaries text, exit_code integer, created_at real not null, updated_at real not null);
commit;
"""
_TABLES = ("meta", "job", "batches")  # what makes a file an import/job journal



class BatchState(StrEnum):
    """Where a batch of a step stands in the journal."""

    IN_FLIGHT = "IN_FLIGHT"  # journaled before its request leaves; reconciled on resume
    DONE = "DONE"  # answered: its results and rejects are journaled
    LOCAL = "LOCAL"  # not a batch: rejects found before any call, ids learned by reads


IN_FLIGHT = BatchState.IN_FLIGHT
DONE = BatchState.DONE


class Reject(NamedTuple):
    source_row: int
    column: str
    code: str
    message: str
    value: str | None = None
    counted: bool = True  # False: the row was still sent (e.g. --on-invalid drop-field)


class Result(NamedTuple):  # a tuple: made once per row on the hot path
    source_row: int
    id: str
    action: str  # created | updated | unchanged


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A batch as the journal holds it: its rows and keys, and where it stands."""

    step: str
    seq: int
    state: BatchState
    rows: tuple[int, ...]
    keys: tuple[str, ...] | None
    started_at: float | None


IdMap = Mapping[tuple[str, str, str], str]  # (object, property, key) -> record id
IDMAP_STEP = "idmap"  # the pseudo-step under which ids learned by reads are journaled


@dataclass(slots=True)
class Transition:
    """One batch's move in the journal; `apply` commits a list of them at once.

    Made by the named constructors below, never with a raw state."""

    step: str
    seq: int
    state: BatchState
    rows: Sequence[int] = ()
    keys: Sequence[str] | None = None
    results: Sequence[tuple[int, str, str]] = ()  # (source_row, id, action), as Result
    rejects: Sequence[Reject] = ()
    ids: IdMap = field(default_factory=dict)
    edges: int = 0  # association batches: edges written

    @classmethod
    def begin(cls, step: str, seq: int, rows: Sequence[int],
              keys: Sequence[str] | None = None) -> Transition:
        """The batch is about to be sent: IN_FLIGHT with its rows and keys."""
        return cls(step, seq, BatchState.IN_FLIGHT, rows=rows, keys=keys)

    @classmethod
    def finish(cls, step: str, seq: int, *, results: Sequence[tuple[int, str, str]] = (),
               rejects: Sequence[Reject] = (), ids: IdMap | None = None) -> Transition:
        """The batch was answered: DONE with its per-row outcome."""
        return cls(step, seq, BatchState.DONE, results=results, rejects=rejects,
                   ids=ids or {})

    @classmethod
    def edges_written(cls, step: str, seq: int, edges: int,
                      rejects: Sequence[Reject] = ()) -> Transition:
        """An association batch was answered: DONE with the edges it wrote."""
        return cls(step, seq, BatchState.DONE, rejects=rejects, edges=edges)

    @classmethod
    def local_rejects(cls, step: str, rejects: Sequence[Reject]) -> Transition:
        """Rows rejected before any call (never in a batch)."""
        return cls(step, -1, BatchState.LOCAL, rejects=rejects)

    @classmethod
    def learned_ids(cls, ids: IdMap) -> Transition:
        """Record ids found by reading HubSpot, kept for later key lookups."""
        return cls(IDMAP_STEP, -1, BatchState.LOCAL, ids=ids)


@dataclass(frozen=True, slots=True)
class Counts:
    created: int
    updated: int
    unchanged: int
    rejected: int


class RunState(StrEnum):
    RUNNING = "RUNNING"  # started, not finished (running, or interrupted: see `is_in_use`)
    DONE = "DONE"  # finished (exit 0 or 1); its summary is stored
    ABANDONED = "ABANDONED"  # left unfinished by `--restart`; kept readable


@dataclass(frozen=True, slots=True)
class RunInput:
    """One input of a run: the step (or object) that reads it, its path, its fingerprint."""

    name: str
    path: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What a run is asked to do, known before any call: command, inputs, spec as given."""

    command: str  # import | run
    name: str  # the object (import) or the job's name (run)
    spec_hash: str  # flags, mapping and job file, as given
    inputs: tuple[RunInput, ...]


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The run a journal holds, and how it ended."""

    request: RunRequest
    state: RunState
    created_at: float
    updated_at: float
    summaries: tuple[dict[str, Any], ...] = ()  # the final summary of each step, once DONE
    exit_code: int | None = None

    def changes(self, request: RunRequest) -> list[str]:
        """What differs between this run and `request`; empty: the same run."""
        ours = self.request
        out = []
        if (ours.command, ours.name) != (request.command, request.name):
            out.append(f"it holds `hsbulk {ours.command}` of {ours.name}")
        elif ours.spec_hash != request.spec_hash:
            out.append("the options, mapping or job file changed")
        old = {i.name: i for i in ours.inputs}
        for new in request.inputs:
            before = old.get(new.name)
            if before is None or (before.path, before.fingerprint) != (new.path,
                                                                       new.fingerprint):
                out.append(f"input {new.path} changed")
        return out


_RUN_COLUMNS = ("command, name, spec_hash, inputs, state, summaries, exit_code, created_at, "
                "updated_at")


def _run_record(db: sqlite3.Connection) -> RunRecord | None:
    row = db.execute(f"select {_RUN_COLUMNS} from run").fetchone()
    if row is None:
        return None
    command, name, spec_hash, inputs, state, summaries, exit_code, created, updated = row
    request = RunRequest(command, name, spec_hash,
                         tuple(RunInput(*i) for i in orjson.loads(inputs)))
    return RunRecord(request, RunState(state), created, updated,
                     tuple(orjson.loads(summaries)) if summaries else (), exit_code)


def _step_counts(db: sqlite3.Connection, step: str) -> Counts:
    created, updated, unchanged = db.execute(
        "select coalesce(sum(created), 0), coalesce(sum(updated), 0), "
        "coalesce(sum(unchanged), 0) from batches where step=? and state=?",
        (step, DONE)).fetchone()
    (rejected,) = db.execute(
        "select count(distinct source_row) from rejects where step=? and counted=1",
        (step,)).fetchone()
    return Counts(created, updated, unchanged, int(rejected or 0))


# -- the files ------------------------------------------------------------------------

_SQLITE_HEADER = b"SQLite format 3\x00"


def _read_only(path: Path) -> sqlite3.Connection:
    """Read a journal without writing, creating or chmod-ing anything beside it.

    With its -wal and -shm present (a live or killed writer) it is read through them;
    without (closed cleanly: everything is in the main file) as an immutable file."""
    live = Path(f"{path}-wal").exists() and Path(f"{path}-shm").exists()
    uri = f"file:{quote(str(path.resolve()))}?{'mode=ro' if live else 'immutable=1'}"
    return sqlite3.connect(uri, uri=True, check_same_thread=False)


def _has_tables(path: Path, tables: Sequence[str]) -> bool:
    try:
        db = _read_only(path)
        try:
            found = {name for (name,) in db.execute(
                "select name from sqlite_master where type='table'")}
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return False
    return found.issuperset(tables)


def journal_kind(path: Path) -> str | None:
    """"steps" (import/job journal), "export", "delta" (a `--delta` state), "new" (not
    written yet), or None: not one."""
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_HEADER))
    except OSError:
        return None
    if not head:  # sqlite has written only its -wal yet (we create the -wal first)
        return "new" if Path(f"{path}-wal").exists() else None
    if head != _SQLITE_HEADER:
        return None
    if _has_tables(path, _TABLES):
        return "steps"
    if _has_tables(path, _EXPORT_TABLES):
        return "export"
    if _has_tables(path, _DELTA_TABLES):
        return "delta"
    return None


def _refuse_foreign(path: Path, kind: str, what: str) -> None:
    """Refuse, before anything touches it, a path that is not (or cannot be) a journal."""
    if path.is_dir():
        raise CheckpointError(f"{what} {path} is a directory; give the journal a file path")
    if not (path.exists() or path.is_symlink()):
        return
    if not path.is_file():
        raise CheckpointError(f"{what} {path} is not a regular file")
    found = journal_kind(path)
    if found is None:
        raise CheckpointError(f"{what} {path} exists and is not an hsbulk journal; it was "
                              "left untouched: give the journal a new path")
    if found not in ("new", kind):
        other = {"export": "the journal of hsbulk export", "delta": "a --delta state"}.get(
            found, "the journal of hsbulk import/run")
        raise CheckpointError(f"{what} {path} is {other}; give this one its own path")


def _lock(path: Path, what: str) -> int:
    """Hold `<journal>.lock` while this process writes the journal (released on exit)."""
    fd = os.open(f"{path}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.fchmod(fd, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CheckpointError(f"{what} {path} is in use by another hsbulk process; wait for "
                              "it to finish (see `hsbulk status`)") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def is_in_use(path: Path) -> bool:
    """Whether a live process holds the journal's lock (its run is going on)."""
    try:
        fd = os.open(f"{path}.lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases our probe
    return False


def _connect(path: Path, ddl: str, what: str) -> sqlite3.Connection:
    """A journal database: 0700 folder, 0600 files (also -wal/-shm), WAL, synchronous=FULL."""
    for suffix in ("-wal", "-shm", ""):  # the main file last: see `journal_kind`
        target = Path(f"{path}{suffix}")
        if not target.exists():
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(target, 0o600)
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("pragma journal_mode=wal")
        db.execute("pragma synchronous=full")
        db.execute("pragma busy_timeout=5000")
        db.executescript(ddl)
    except sqlite3.DatabaseError as exc:
        raise CheckpointError(f"{what} {path} is not usable: {exc}") from None
    return db


def _open(path: Path, ddl: str, what: str, kind: str) -> tuple[sqlite3.Connection, int]:
    """Check the path, make its folder, take its lock, connect: (database, lock fd)."""
    _refuse_foreign(path, kind, what)
    prepare_folder(path, what)
    lock = _lock(path, what)
    try:
        return _connect(path, ddl, what), lock
    except BaseException:
        os.close(lock)
        raise


def prepare_folder(path: Path, what: str = "checkpoint") -> None:
    """Create the checkpoint's folder 0700."""
    folder = path.parent
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"{what} {path}: cannot make its folder {folder}: "
                              f"{exc.strerror}") from None


def archive_path(path: Path, started_at: float) -> Path:
    """Where a journal's earlier run is kept: `NAME.<UTC start>[-N].db` beside it."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started_at))
    for n in itertools.count(1):
        target = path.with_name(f"{path.stem}.{stamp}{f'-{n}' if n > 1 else ''}{path.suffix}")
        if not any(Path(f"{target}{s}").exists() for s in ("", "-wal", "-shm")):
            return target
    raise AssertionError("unreachable")


def completed_run(path: Path, request: RunRequest) -> RunRecord | None:
    """The finished run of `request` that `path` holds, if any; reads without writing.

    Refuses (CheckpointError) a path that is not a journal, like opening it would."""
    _refuse_foreign(path, "steps", "checkpoint")
    if not path.exists():
        return None
    try:
        db = _read_only(path)
        try:
            record = _run_record(db) if _table_exists(db, "run") else None
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise CheckpointError(f"checkpoint {path} is not usable: {exc}") from None
    if record is None or record.state is not RunState.DONE or record.changes(request):
        return None
    return record


def _table_exists(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("select 1 from sqlite_master where type='table' and name=?",
                      (name,)).fetchone() is not None


T = TypeVar("T")


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction (`begin immediate` ... commit, rolled back on any error)."""
    db.execute("begin immediate")
    try:
        yield db
    except BaseException:
        db.execute("rollback")
        raise
    db.execute("commit")


class JournalThread:
    """The one async face of every journal: calls run off the event loop, one at a time.

    A journal's connection is used by one thread at a time, and its fsyncs
    (`synchronous=FULL`) never block the event loop. Import, associations and export all
    reach their journal through `call`.
    """

    def __init__(self) -> None:
        self._limiter = anyio.CapacityLimiter(1)

    async def call(self, func: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)


@dataclass(slots=True)
class TextResults:
    """Batches' results as the journal's JSON text, one entry per batch: its source rows
    joined by `,`; its keys, ids and actions joined by `","` (JSON strings free of escapes,
    less their outer quotes). Polars splits these far faster than Python decodes them."""

    batches: list[int] = field(default_factory=list)  # each batch's ordinal in its chunk
    counts: list[int] = field(default_factory=list)  # each batch's rows
    rows: list[bytes] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)
    ids: list[bytes] = field(default_factory=list)
    actions: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class DecodedResults:
    """Batches' results decoded, as columns, each row with its batch's ordinal."""

    batches: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    keys: list[str | None] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ResultsChunk:
    """Some batches' results, with each row's key (`iter_keyed_results`).

    A batch's rows come as answered: the reader sorts a batch by (source_row, key, id,
    action) where its rows are out of order. The usual batch (answered whole, in the order
    it was journaled, with keys, its JSON free of escapes) comes as `text`; any other (a
    subset of its rows, another order, no keys, escaped strings) comes `decoded`.
    """

    text: TextResults = field(default_factory=TextResults)
    decoded: DecodedResults = field(default_factory=DecodedResults)
    batches: int = 0  # batches added
    size: int = 0  # rows added

    def add(self, rows: bytes, keys: bytes | None, results: bytes) -> None:
        """One batch's journaled blobs: its rows and keys (JSON arrays) and its results
        (`[rows, ids, actions]`, JSON)."""
        if keys is None or (cut := _actions_start(rows, keys, results)) < 0:
            self._add_decoded(rows, keys, results)
        else:
            out, count = self.text, rows.count(b",") + 1
            out.batches.append(self.batches)
            out.counts.append(count)
            out.rows.append(rows[1:-1])
            out.keys.append(keys[2:-2])
            out.ids.append(results[len(rows) + 4:cut])
            out.actions.append(results[cut + 5:-3])
            self.size += count
        self.batches += 1

    def _add_decoded(self, rows: bytes, keys: bytes | None, results: bytes) -> None:
        answered, ids, actions = orjson.loads(results)
        out = self.decoded
        out.batches += [self.batches] * len(answered)
        out.rows += answered
        out.keys += _keyed(answered, orjson.loads(rows),
                           None if keys is None else orjson.loads(keys))
        out.ids += ids
        out.actions += actions
        self.size += len(answered)


_IDS_START = b',["'  # after a batch's source rows in its results: its ids begin
_ACTIONS_START = b'"],["'  # no string holds it unescaped: the ids end, the actions begin


def _actions_start(rows: bytes, keys: bytes, results: bytes) -> int:
    """Where the actions of a batch's results begin (`"],["` before them), for a batch
    answered whole and in order whose JSON holds no escape (see `TextResults`); -1 for any
    other batch. Results read `[` + rows + `,["` + ids + `"],["` + actions + `"]]`.

    Keys, ids and actions are strings (see `Transition`). Without a backslash no JSON
    string holds a quote, so `","` only ever separates two strings and `"],["` only ever
    ends one array of strings and begins the next."""
    if not (results.startswith(rows, 1) and results.startswith(_IDS_START, len(rows) + 1)
            and results.endswith(b'"]]') and b"\\" not in results and b"\\" not in keys
            and keys.startswith(b'["') and keys.endswith(b'"]')):
        return -1
    cut = results.find(_ACTIONS_START, len(rows))
    # One value per row in each array (a null key, or any other shape, is decoded).
    gaps = rows.count(b",")
    if cut < 0 or not (keys.count(b'","') == gaps
                       == results.count(b'","', len(rows) + 4, cut)
                       == results.count(b'","', cut + 5)):
        return -1
    return cut


def _keyed(rows: list[int], batch_rows: list[int], batch_keys: list[str] | None
           ) -> list[str | None]:
    """The key of each of a batch's answered `rows`: the one it was journaled with (None
    for a batch journaled without keys, or a row not in it)."""
    if batch_keys is None:
        return [None] * len(rows)
    if rows == batch_rows:
        return list(batch_keys)
    by_row = dict(zip(batch_rows, batch_keys, strict=True))
    return [by_row.get(row) for row in rows]


class SqliteCheckpoint:
    """The journal of one job. Use from one thread at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db, self._lock = _open(path, _DDL, "checkpoint", "steps")
        version = self._one("select value from meta where key='schema'")
        if version is None:
            with transaction(self._db) as db:
                db.execute("insert into meta values ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(version) != SCHEMA_VERSION:
            raise CheckpointError(f"checkpoint {path} has schema {version}, this hsbulk "
                                  f"writes {SCHEMA_VERSION}; use a new --checkpoint")

    def close(self) -> None:
        self._db.close()
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        row = self._db.execute(sql, args).fetchone()
        return None if row is None else row[0]

    # -- the job --------------------------------------------------------------------

    def open_job(self, key: str, spec_hash: str, fingerprints: Mapping[str, str]) -> bool:
        """Start or resume job `key`; returns True when resuming.

        Refuses when the job spec or an input changed since the checkpoint was written.
        """
        now = time.time()
        row = self._db.execute(
            "select spec_hash, fingerprints from job where key=?", (key,)
        ).fetchone()
        prints = orjson.dumps(dict(sorted(fingerprints.items()))).decode()
        if row is None:
            with transaction(self._db) as db:
                db.execute("insert into job values (?, ?, ?, ?, ?, ?)",
                           (key, spec_hash, prints, RunState.RUNNING, now, now))
            return False
        if row[0] != spec_hash:
            raise CheckpointError(
                f"checkpoint {self.path} belongs to a different job spec (flags, mapping, "
                "job file or the portal's properties changed); restore the original command, "
                "or pass --restart to abandon the unfinished run and start a new one"
            )
        old = orjson.loads(row[1])
        changed = sorted(name for name, value in fingerprints.items() if old.get(name) != value)
        if changed:
            raise CheckpointError(
                f"input {', '.join(changed)} changed since checkpoint {self.path} was written; "
                "resuming would mix two inputs: restore the original file, or pass --restart "
                "to abandon the unfinished run and start a new one"
            )
        with transaction(self._db) as db:
            db.execute("update job set state=?, updated_at=? where key=?",
                       (RunState.RUNNING, now, key))
        return True

    def finish_job(self, key: str) -> None:
        """Every row of step `key` is settled."""
        with transaction(self._db) as db:
            db.execute("update job set state=?, updated_at=? where key=?",
                       (RunState.DONE, time.time(), key))

    # -- the run (one per journal; earlier ones archived beside it) --------------------

    def run_record(self) -> RunRecord | None:
        return _run_record(self._db)

    def begin_run(self, request: RunRequest, *, restart: bool = False) -> RunRecord | None:
        """Make the journal hold `request`'s run; returns that run if it is already complete.

        An unfinished run of the same request resumes; of a changed one it is refused
        (exit 2), or with `restart` abandoned. A finished run of another request, or any
        run with `restart`, is archived beside the journal (`archive_path`) and a new run
        starts here. A journal written before runs were recorded adopts this request and
        leaves the checks to `open_job`.
        """
        record = self.run_record()
        if record is None:
            self._start_run(request)
            return None
        changes = record.changes(request)
        if record.state is RunState.DONE and not changes and not restart:
            return record
        if record.state is RunState.RUNNING and not restart:
            if changes:
                raise CheckpointError(
                    f"checkpoint {self.path} holds an unfinished run and {'; '.join(changes)}: "
                    "run the original command to finish it, or pass --restart to abandon it "
                    "(it stays readable) and start a new run")
            with transaction(self._db) as db:
                db.execute("update run set updated_at=?", (time.time(),))
            return None
        self._archive(record)
        self._start_run(request)
        return None

    def finish_run(self, summaries: Sequence[Mapping[str, Any]], exit_code: int) -> None:
        """The run finished (exit 0 or 1): keep its summary for re-runs and `hsbulk status`."""
        with transaction(self._db) as db:
            db.execute("update run set state=?, summaries=?, exit_code=?, updated_at=?",
                       (RunState.DONE, orjson.dumps(list(summaries)).decode(), exit_code,
                        time.time()))

    def _start_run(self, request: RunRequest) -> None:
        now = time.time()
        inputs = orjson.dumps([[i.name, i.path, i.fingerprint] for i in request.inputs])
        with transaction(self._db) as db:
            db.execute(
                f"insert or replace into run (id, {_RUN_COLUMNS}) "
                "values (1, ?, ?, ?, ?, ?, null, null, ?, ?)",
                (request.command, request.name, request.spec_hash, inputs.decode(),
                 RunState.RUNNING, now, now))

    def _archive(self, record: RunRecord) -> None:
        """Move this journal aside (an unfinished run marked ABANDONED) and start empty."""
        if record.state is RunState.RUNNING:
            with transaction(self._db) as db:
                db.execute("update run set state=?, updated_at=?",
                           (RunState.ABANDONED, time.time()))
        self._db.close()
        target = archive_path(self.path, record.created_at)
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{self.path}{suffix}").exists():
                os.replace(f"{self.path}{suffix}", f"{target}{suffix}")
        self._db = _connect(self.path, _DDL, "checkpoint")
        with transaction(self._db) as db:
            db.execute("insert into meta values ('schema', ?)", (str(SCHEMA_VERSION),))

    # -- batches --------------------------------------------------------------------

    def batches(self, step: str) -> dict[int, BatchRecord]:
        out: dict[int, BatchRecord] = {}
        for seq, state, rows, keys, started in self._db.execute(
            "select seq, state, rows, keys, started_at from batches where step=?", (step,),
        ):
            out[seq] = BatchRecord(step, seq, BatchState(state), tuple(orjson.loads(rows)),
                                   tuple(orjson.loads(keys)) if keys is not None else None,
                                   started)
        return out

    def apply(self, transitions: Iterable[Transition]) -> None:
        """Commit every transition in one transaction (one fsync)."""
        now = time.time()
        with transaction(self._db) as db:
            for t in transitions:
                if t.state is BatchState.IN_FLIGHT:
                    self._begin(db, t, now)
                elif t.state is BatchState.DONE:
                    self._finish(db, t)
                if t.rejects:
                    self._insert_rejects(t.step, t.rejects)
                if t.ids:
                    db.executemany(
                        "insert or replace into idmap values (?, ?, ?, ?)",
                        [(obj, prop, key.lower(), rid)
                         for (obj, prop, key), rid in t.ids.items()],
                    )

    @staticmethod
    def _begin(db: sqlite3.Connection, t: Transition, now: float) -> None:
        db.execute(
            "insert into batches (step, seq, state, first_row, last_row, rows, keys, "
            "started_at) values (?, ?, ?, ?, ?, ?, ?, ?) "
            "on conflict (step, seq) do update set state=excluded.state, "
            "started_at=excluded.started_at",
            (t.step, t.seq, BatchState.IN_FLIGHT, t.rows[0], t.rows[-1],
             orjson.dumps(list(t.rows)),
             None if t.keys is None else orjson.dumps(list(t.keys)), now),
        )

    @staticmethod
    def _finish(db: sqlite3.Connection, t: Transition) -> None:
        # One row per batch, results as one blob: 100 row inserts per batch were most
        # of the journal's cost.
        rows, ids, actions = (list(c) for c in zip(*t.results, strict=True)) if (
            t.results) else ([], [], [])
        db.execute(
            "update batches set state=?, results=?, created=?, updated=?, unchanged=? "
            "where step=? and seq=?",
            (BatchState.DONE, orjson.dumps([rows, ids, actions]),
             actions.count("created") + t.edges,
             actions.count("updated"), actions.count("unchanged"), t.step, t.seq))

    def _insert_rejects(self, step: str, rejects: Iterable[Reject]) -> None:
        self._db.executemany(
            "insert or ignore into rejects values (?, ?, ?, ?, ?, ?, ?)",
            [(step, r.source_row, r.column, r.code, r.value, r.message, int(r.counted))
             for r in rejects],
        )

    # -- named transitions, one transaction each (`apply` groups many) ------------------

    def begin_batches(self, step: str,
                      batches: Iterable[tuple[int, Sequence[int], Sequence[str] | None]]
                      ) -> None:
        """Batches (seq, rows, keys) about to be sent: IN_FLIGHT."""
        self.apply([Transition.begin(step, seq, rows, keys) for seq, rows, keys in batches])

    def finish_batch(self, step: str, seq: int, *,
                     results: Sequence[tuple[int, str, str]] = (),
                     rejects: Sequence[Reject] = (), ids: IdMap | None = None) -> None:
        self.apply([Transition.finish(step, seq, results=results, rejects=rejects, ids=ids)])

    def record_edges(self, step: str, seq: int, edges: int,
                     rejects: Sequence[Reject] = ()) -> None:
        self.apply([Transition.edges_written(step, seq, edges, rejects)])

    def record_rejects(self, step: str, rejects: Sequence[Reject]) -> None:
        """Local (pre-send) rejects; recorded again on every run, idempotently."""
        self.apply([Transition.local_rejects(step, rejects)])

    def remember_ids(self, ids: IdMap) -> None:
        """Record ids found by key reads, for later lookups (`lookup_ids`)."""
        self.apply([Transition.learned_ids(ids)])

    # -- reading back ---------------------------------------------------------------

    def counts(self, step: str) -> Counts:
        return _step_counts(self._db, step)

    def iter_results(self, step: str, chunk: int = 50_000) -> Iterator[list[tuple[Any, ...]]]:
        """(source_row, id, action) in batch order, sorted within each batch."""
        cursor = self._db.execute(
            "select results from batches where step=? and state=? and results is not null "
            "order by seq", (step, DONE))
        out: list[tuple[Any, ...]] = []
        for (blob,) in cursor:
            rows, ids, actions = orjson.loads(blob)
            out += sorted(zip(rows, ids, actions, strict=True))
            if len(out) >= chunk:
                yield out
                out = []
        if out:
            yield out

    def iter_keyed_results(self, step: str, chunk: int = 50_000) -> Iterator[ResultsChunk]:
        """The step's results in batch order, each row with the key its batch was
        journaled with (None for a batch journaled without), in chunks of about `chunk`
        rows; each batch's rows as answered (see `ResultsChunk`)."""
        cursor = self._db.execute(
            "select rows, keys, results from batches where step=? and state=? "
            "and results is not null order by seq", (step, DONE))
        out = ResultsChunk()
        for rows, keys, results in cursor:
            out.add(rows, keys, results)
            if out.size >= chunk:
                yield out
                out = ResultsChunk()
        if out.size:
            yield out

    def results_of(self, step: str, seq: int) -> list[tuple[int, str, str]]:
        """(source_row, id, action) of one DONE batch (empty for any other)."""
        blob = self._one("select results from batches where step=? and seq=? and state=?",
                         (step, seq, DONE))
        if blob is None:
            return []
        return list(zip(*orjson.loads(blob), strict=True))

    def iter_rejects(self, step: str, chunk: int = 50_000) -> Iterator[list[tuple[Any, ...]]]:
        cursor = self._db.execute(
            "select source_row, col, value, code, message from rejects where step=? "
            "order by source_row, col", (step,))
        while rows := cursor.fetchmany(chunk):
            yield rows

    def lookup_ids(self, obj: str, prop: str, keys: Iterable[str]) -> dict[str, str]:
        wanted = [key.lower() for key in keys]
        found: dict[str, str] = {}
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            marks = ",".join("?" * len(part))
            found.update(self._db.execute(
                f"select key, id from idmap where object=? and prop=? and key in ({marks})",
                (obj, prop, *part)).fetchall())
        return found


# -- the delta state (`--delta`): what this state last confirmed written, per record -----

_DELTA_DDL = """
begin;
create table if not exists delta_meta (key text primary key, value text not null);
create table if not exists records (
    key text primary key, id text not null, props text not null,
    written_run integer not null, before text) without rowid;
create table if not exists seen (key text primary key, run integer not null) without rowid;
create table if not exists edges (
    from_key text not null, to_object text not null, to_id text not null,
    type_id integer not null, category text not null, written_run integer not null,
    seen_run integer not null,
    primary key (from_key, to_object, to_id, type_id)) without rowid;
create table if not exists runs (
    id integer primary key, started_at real not null, finished_at real, state text not null,
    tag text unique);
commit;
"""
_DELTA_TABLES = ("delta_meta", "records", "runs")

# `props` merges the properties sent (`json_patch`): an empty cell never clears a value
# in HubSpot, so what HubSpot holds is the union of every confirmed write. `before` keeps
# the props as they were when the record's `written_run` started (null: new in that run),
# so a resumed run diffs its rows against the same state as its first attempt did.
_CONFIRM = """
insert into records (key, id, props, written_run, before) values (?1, ?2, {value}, ?4, null)
on conflict (key) do update set
    id = excluded.id,
    before = case when records.written_run < excluded.written_run then records.props
                  else records.before end,
    props = {merged},
    written_run = excluded.written_run
"""


class Edge(NamedTuple):
    """An association this state wrote: from a record (by its key) to a record id."""

    from_key: str  # case-folded natural key of the record it starts from
    to_object: str
    to_id: str
    type_id: int
    category: str = "HUBSPOT_DEFINED"


class DeltaRun(StrEnum):
    RUNNING = "RUNNING"  # started, not finished (resumed by the next run of its import)
    DONE = "DONE"  # every confirmed write of the run is in the state
    ABANDONED = "ABANDONED"  # left unfinished; its confirmed writes stay


def _keys_json(keys: Iterable[str]) -> str:
    return orjson.dumps(keys if isinstance(keys, list) else list(keys)).decode()


class DeltaStore:
    """The state of `--delta` loads: per natural key, the record id and the properties last
    CONFIRMED written (only from answers, after the journal has the batch DONE), plus the
    associations written, and which keys each run saw.

    One SQLite file per object and key property (WAL, synchronous=FULL, 0600 in a 0700
    folder). Keys are case-folded. Writes are serialised by a lock (the chunk thread marks
    keys seen while the journal thread confirms); reads for diffing go through their own
    connection. `identity` (object, key property, portal) is kept in the file, and a file
    of another identity is refused.
    """

    def __init__(self, path: Path, identity: str | None = None) -> None:
        self.path = path
        self._db, self._lock = _open(path, _DELTA_DDL, "state", "delta")
        self._write = threading.Lock()
        self._read = threading.Lock()
        self._reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._check_identity(identity)

    def __repr__(self) -> str:
        return f"DeltaStore({str(self.path)!r})"

    def _check_identity(self, identity: str | None) -> None:
        if identity is None:
            return
        row = self._db.execute("select value from delta_meta where key='identity'").fetchone()
        if row is None:
            with self._tx() as db:
                db.execute("insert into delta_meta values ('identity', ?)", (identity,))
        elif row[0] != identity:
            self.close()
            raise CheckpointError(f"state {self.path} belongs to {row[0]}, not {identity}; "
                                  "give this import its own --state")

    def close(self) -> None:
        self._reader.close()
        self._db.close()
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def _query(self, sql: str, args: Sequence[Any]) -> list[Any]:
        """A read through the reader connection (any thread, one at a time)."""
        with self._read:
            return self._reader.execute(sql, args).fetchall()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._write, transaction(self._db) as db:
            yield db

    # -- runs -------------------------------------------------------------------------

    def begin_run(self, tag: str | None = None, *, resume: bool = True) -> int:
        """The run id for this import: the unfinished one (`resume`) or a new one.

        `tag` names the journal run this state run belongs to: the run with that tag is
        taken again whatever its state (a run resumed after the state finished it but
        before the journal did diffs as before), and any other unfinished one is marked
        ABANDONED (its writes stay). Without a tag, the last run if unfinished and
        `resume`, else a new one."""
        if tag is not None:
            row = self._db.execute("select id from runs where tag=?", (tag,)).fetchone()
            if row is not None:
                return int(row[0])
        else:
            row = self._db.execute("select id, state from runs order by id desc limit 1"
                                   ).fetchone()
            if row is not None and row[1] == DeltaRun.RUNNING and resume:
                return int(row[0])
        with self._tx() as db:
            db.execute("update runs set state=? where state=?",
                       (DeltaRun.ABANDONED, DeltaRun.RUNNING))
            cursor = db.execute("insert into runs (started_at, state, tag) values (?, ?, ?)",
                                (time.time(), DeltaRun.RUNNING, tag))
            return int(cursor.lastrowid or 0)

    def finish_run(self, run_id: int) -> None:
        """Every confirmed write of run `run_id` is in the state."""
        with self._tx() as db:
            db.execute("update runs set state=?, finished_at=? where id=?",
                       (DeltaRun.DONE, time.time(), run_id))

    def last_finished_run(self) -> int | None:
        row = self._db.execute("select max(id) from runs where state=?",
                               (DeltaRun.DONE,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # -- records ----------------------------------------------------------------------

    def size(self) -> int:
        return int(self._db.execute("select count(*) from records").fetchone()[0])

    def lookup(self, keys: Iterable[str]) -> dict[str, tuple[str, str]]:
        """key -> (id, props JSON) as the state holds them now."""
        return {key: (rid, props) for key, rid, props in self._query(
            "select r.key, r.id, r.props from json_each(?) j join records r on r.key=j.value",
            (_keys_json(keys),))}

    def lookup_as_of(self, keys: Iterable[str], run_id: int) -> list[tuple[str, str, str]]:
        """(key, id, props JSON) as they were when run `run_id` started: records that run
        wrote are answered with their earlier props, and records it created not at all.
        A resumed run therefore diffs against what its first attempt saw."""
        return self._query(
            "select key, id, props from (select r.key, r.id, case when r.written_run=? "
            "then r.before else r.props end as props from json_each(?) j "
            "join records r on r.key=j.value) where props is not null",
            (run_id, _keys_json(keys)))

    def confirm(self, rows: Iterable[tuple[str, str, str | bytes]], run_id: int, *,
                merge: bool = True) -> None:
        """(key, id, props JSON) HubSpot confirmed written in run `run_id`.

        `merge`: the props are merged into those stored (an update sends only what
        changed); else they replace them (`--delta refresh`). Idempotent."""
        self._confirm("?3", rows, run_id, merge)

    def confirm_inputs(self, rows: Iterable[tuple[str, str, str]], run_id: int, *,
                       merge: bool = True) -> None:
        """As `confirm`, from (key, id, the batch input JSON sent): its `properties`."""
        self._confirm("json_extract(?3, '$.properties')", rows, run_id, merge)

    def _confirm(self, value: str, rows: Iterable[tuple[str, str, str | bytes]],
                 run_id: int, merge: bool) -> None:
        merged = "json_patch(records.props, excluded.props)" if merge else "excluded.props"
        sql = _CONFIRM.format(value=value, merged=merged)
        with self._tx() as db:
            db.executemany(sql, ((key, rid, _text(props), run_id) for key, rid, props in rows))

    def mark_seen(self, keys: Iterable[str], run_id: int) -> None:
        """These keys are in run `run_id`'s input (mirror never archives them)."""
        with self._tx() as db:
            db.execute("insert or replace into seen select value, ? from json_each(?)",
                       (run_id, _keys_json(keys)))

    def unchanged_sample(self, n: int, run_id: int, rng: random.Random
                         ) -> list[tuple[str, str, str]]:
        """Up to `n` random (key, id, props) seen in run `run_id` and not written in it."""
        chosen: list[str] = []
        cursor = self._db.execute(
            "select r.key from records r join seen s on s.key=r.key "
            "where s.run=? and r.written_run<>?", (run_id, run_id))
        for i, (key,) in enumerate(cursor):  # reservoir sampling: one pass, n keys held
            if i < n:
                chosen.append(key)
            else:
                j = rng.randrange(i + 1)
                if j < n:
                    chosen[j] = key
        found = self.lookup(chosen)
        return [(key, *found[key]) for key in chosen if key in found]

    def absent(self, run_id: int) -> Iterator[tuple[str, str]]:
        """(key, id) of the records this state wrote whose key run `run_id` did not see."""
        cursor = self._db.execute(
            "select r.key, r.id from records r left join seen s on s.key=r.key "
            "where r.written_run<>? and (s.run is null or s.run<>?) order by r.key",
            (run_id, run_id))
        while rows := cursor.fetchmany(1000):
            yield from rows

    def forget(self, keys: Iterable[str]) -> None:
        """The records are gone (archived): the state no longer holds them or their edges."""
        keys_json = _keys_json(keys)
        with self._tx() as db:
            for table, column in (("records", "key"), ("seen", "key"), ("edges", "from_key")):
                db.execute(f"delete from {table} where {column} in "
                           "(select value from json_each(?))", (keys_json,))

    # -- associations -------------------------------------------------------------------

    def edges_of(self, from_keys: Iterable[str]) -> list[Edge]:
        return [Edge(*row) for row in self._query(
            "select e.from_key, e.to_object, e.to_id, e.type_id, e.category "
            "from json_each(?) j join edges e on e.from_key=j.value "
            "order by e.from_key, e.to_object, e.to_id, e.type_id", (_keys_json(from_keys),))]

    def confirm_edges(self, rows: Iterable[Edge], run_id: int) -> None:
        """Associations HubSpot confirmed written in run `run_id`."""
        with self._tx() as db:
            db.executemany(
                "insert into edges values (?, ?, ?, ?, ?, ?, ?) on conflict "
                "(from_key, to_object, to_id, type_id) do update set "
                "category=excluded.category, written_run=excluded.written_run, "
                "seen_run=excluded.seen_run", ((*e, run_id, run_id) for e in rows))

    def mark_edges_seen(self, rows: Iterable[Edge], run_id: int) -> None:
        with self._tx() as db:
            db.executemany(
                "update edges set seen_run=? where from_key=? and to_object=? and to_id=? "
                "and type_id=?", ((run_id, *e[:4]) for e in rows))

    def absent_edges(self, run_id: int) -> Iterator[Edge]:
        """Associations this state wrote that run `run_id` did not see."""
        cursor = self._db.execute(
            "select from_key, to_object, to_id, type_id, category from edges "
            "where seen_run<>? and written_run<>? order by from_key, to_object, to_id",
            (run_id, run_id))
        while rows := cursor.fetchmany(1000):
            yield from (Edge(*row) for row in rows)

    def forget_edges(self, rows: Iterable[Edge]) -> None:
        with self._tx() as db:
            db.executemany("delete from edges where from_key=? and to_object=? and to_id=? "
                           "and type_id=?", (e[:4] for e in rows))


def _text(props: str | bytes) -> str:
    return props.decode() if isinstance(props, bytes) else props


_EXPORT_DDL = """
begin;
create table if not exists export_meta (key text primary key, value text not null);
create table if not exists export_ranges (
    id integer primary key, kind text not null, lo integer not null, hi integer not null,
    cursor integer, after text, state text not null);
create table if not exists export_parts (
    dataset text not null, part integer not null, range_id integer, path text,
    rows integer not null, max_modified text,
    primary key (dataset, part)) without rowid;
commit;
"""
_EXPORT_TABLES = ("export_meta", "export_ranges", "export_parts")


@dataclass(frozen=True, slots=True)
class ExportRange:
    """An `hs_object_id` range [lo, hi) of one export and how far it has been written."""

    id: int
    kind: str  # list | search
    lo: int
    hi: int
    cursor: int | None  # the last id written to a part file
    after: str | None  # the list cursor's opaque token after that id
    state: RangeState


@dataclass(frozen=True, slots=True)
class ExportPart:
    dataset: str  # the object, or `object__to` for an edge table
    part: int
    range_id: int | None
    path: str | None  # relative to the output folder; None: nothing to write (no edges)
    rows: int
    max_modified: str | None


class ExportState(StrEnum):
    """An export journal's state: PLANNING (finding the id bounds) -> RUNNING (reading
    its ranges) -> DONE (manifest written; the next export starts afresh)."""

    PLANNING = "PLANNING"
    RUNNING = "RUNNING"
    DONE = "DONE"


class RangeState(StrEnum):
    """An export range: OPEN (rows above its cursor still to read) -> DONE."""

    OPEN = "OPEN"
    DONE = "DONE"


class ExportJournal:
    """The journal of one export, in its own SQLite file (WAL, synchronous=FULL, 0600).

    A range's cursor moves only in the transaction that records the part file holding
    the rows up to it, so a part is either journaled with its cursor or an orphan the
    next run deletes; a resumed export re-reads nothing it has journaled and writes no
    row twice. Splitting a range (rebalancing) is one transaction too. Use from one
    thread at a time: the export reaches it through `JournalThread.call`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db, self._lock = _open(path, _EXPORT_DDL, "export checkpoint", "export")

    def close(self) -> None:
        self._db.close()
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def _tx(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        db = self._db
        db.execute("begin immediate")
        try:
            for sql, args in statements:
                db.execute(sql, args)
            db.execute("commit")
        except BaseException:
            db.execute("rollback")
            raise

    def get(self, key: str) -> str | None:
        row = self._db.execute("select value from export_meta where key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def open(self, spec_hash: str, started_at: str) -> tuple[bool, str]:
        """Start or resume; returns (resuming, the start time of the export being run).

        A finished export is forgotten and started afresh; an unfinished one of another
        spec is refused.
        """
        old = self.get("spec_hash")
        if old is not None and self.state() != ExportState.DONE:
            if old != spec_hash:
                raise CheckpointError(
                    f"export checkpoint {self.path} holds an unfinished export with other "
                    "options; re-run that export to finish it, or use another checkpoint "
                    "path")
            return True, str(self.get("started_at"))
        self._tx([("delete from export_meta", ()), ("delete from export_ranges", ()),
                  ("delete from export_parts", ()),
                  ("insert into export_meta values ('spec_hash', ?)", (spec_hash,)),
                  ("insert into export_meta values ('started_at', ?)", (started_at,)),
                  ("insert into export_meta values ('state', 'PLANNING')", ())])
        return False, started_at

    def state(self) -> ExportState | None:
        value = self.get("state")
        return None if value is None else ExportState(value)

    def keep_first_part(self, number: int) -> None:
        """The number of this export's first part file (parts below it are earlier runs')."""
        self._tx([("insert or replace into export_meta values ('first_part', ?)",
                   (str(number),))])

    def plan(self, ranges: Iterable[tuple[str, int, int]], total: int | None,
             density: float | None) -> None:
        """The first ranges (kind, lo, hi), the records to read (`total`, None: not known
        yet) and how densely they fill the id space, together with the end of planning."""
        self._tx([*(("insert into export_ranges (kind, lo, hi, state) values (?, ?, ?, ?)",
                     (*r, RangeState.OPEN.value)) for r in ranges),
                  *self._bounds_meta(total, density),
                  ("insert or replace into export_meta values ('state', ?)",
                   (ExportState.RUNNING.value,))])

    @staticmethod
    def _bounds_meta(total: int | None, density: float | None
                     ) -> list[tuple[str, Sequence[Any]]]:
        meta = [] if total is None else [("total", str(total))]
        if density is not None:
            meta.append(("density", str(density)))
        return [("insert or replace into export_meta values (?, ?)", m) for m in meta]

    def bound(self, ends: Iterable[tuple[int, int]], total: int,
              density: float | None) -> None:
        """The probes found where the ids end (after planning, while the list cursor
        reads): each (range id, hi) cuts a range over the whole id space down to `hi`,
        with the records to read and their density, in one transaction."""
        self._tx([*(("update export_ranges set hi=? where id=?", (hi, rid))
                    for rid, hi in ends),
                  *self._bounds_meta(total, density)])

    def finish(self) -> None:
        """The export is complete: the next one with this journal starts afresh."""
        self._tx([("insert or replace into export_meta values ('state', ?)",
                   (ExportState.DONE.value,))])

    def ranges(self) -> list[ExportRange]:
        return [ExportRange(rid, kind, lo, hi, cursor, after, RangeState(state))
                for rid, kind, lo, hi, cursor, after, state in self._db.execute(
                    "select id, kind, lo, hi, cursor, after, state from export_ranges "
                    "order by lo")]

    def split(self, range_id: int, mid: int, new_id: int, kind: str = "search",
              after: str | None = None) -> None:
        """Cut range `range_id` at `mid`: it keeps [lo, mid), a new range `new_id` takes
        [mid, hi), read by `kind` (list: from the list cursor's paging token `after`)."""
        self._tx([
            ("insert into export_ranges (id, kind, lo, hi, after, state) "
             "select ?, ?, ?, hi, ?, ? from export_ranges where id=?",
             (new_id, kind, mid, after, RangeState.OPEN.value, range_id)),
            ("update export_ranges set hi=? where id=?", (mid, range_id))])

    def advance(self, range_id: int, cursor: int | None, after: str | None, done: bool,
                part: ExportPart | None) -> None:
        """Record a written part and move its range's cursor, in one transaction."""
        statements: list[tuple[str, Sequence[Any]]] = [(
            "update export_ranges set cursor=coalesce(?, cursor), after=?, state=? where id=?",
            (cursor, after, (RangeState.DONE if done else RangeState.OPEN).value, range_id))]
        if part is not None:
            statements.append(self._part_insert(part))
        self._tx(statements)

    def _part_insert(self, part: ExportPart) -> tuple[str, Sequence[Any]]:
        return ("insert or replace into export_parts values (?, ?, ?, ?, ?, ?)",
                (part.dataset, part.part, part.range_id, part.path, part.rows,
                 part.max_modified))

    def add_part(self, part: ExportPart) -> None:
        """An edge table part (no range cursor behind it)."""
        self._tx([self._part_insert(part)])

    def parts(self, dataset: str | None = None) -> list[ExportPart]:
        sql = "select dataset, part, range_id, path, rows, max_modified from export_parts"
        rows = (self._db.execute(sql + " where dataset=? order by part", (dataset,))
                if dataset is not None else self._db.execute(sql + " order by dataset, part"))
        return [ExportPart(*row) for row in rows]


# -- reading any journal, for `hsbulk status` ----------------------------------------


@dataclass(frozen=True, slots=True)
class JournalInfo:
    """What `hsbulk status` shows of one journal."""

    path: Path
    command: str  # import | run | export
    name: str  # the object, or the job's name
    steps: tuple[str, ...]  # step names (export: the datasets written)
    inputs: tuple[RunInput, ...]
    state: str  # running | interrupted | done | abandoned
    rows_read: int  # export: records written
    created: int | None  # None for an export
    updated: int | None
    rejected: int | None
    updated_at: float
    exit_code: int | None = None


def describe_journal(path: Path) -> JournalInfo:
    """Read one journal without writing to it; CheckpointError if it is not one."""
    kind = journal_kind(path) if path.is_file() else None
    if kind not in ("steps", "export"):
        raise CheckpointError(f"{path} is not an hsbulk journal")
    try:
        db = _read_only(path)
        try:
            return (_describe_steps if kind == "steps" else _describe_export)(path, db)
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise CheckpointError(f"journal {path} is not readable: {exc}") from None


def _last_write(path: Path, *stamps: float) -> float:
    files = [Path(f"{path}{s}") for s in ("", "-wal")]
    return max([*stamps, *(f.stat().st_mtime for f in files if f.exists())])


def _live_state(path: Path, finished: bool) -> str:
    if finished:
        return "done"
    return "running" if is_in_use(path) else "interrupted"


def _describe_steps(path: Path, db: sqlite3.Connection) -> JournalInfo:
    jobs = db.execute("select key, fingerprints, state, updated_at from job "
                      "order by created_at").fetchall()
    steps = tuple(key for key, *_ in jobs)
    record = _run_record(db) if _table_exists(db, "run") else None
    if record is None:  # written before runs were recorded
        request = RunRequest("run" if len(steps) > 1 else "import", ", ".join(steps), "",
                             tuple(RunInput(name, "?", fp) for _, prints, _, _ in jobs
                                   for name, fp in orjson.loads(prints).items()))
        finished = bool(jobs) and all(state == DONE for _, _, state, _ in jobs)
        record = RunRecord(request, RunState.DONE if finished else RunState.RUNNING, 0.0, 0.0)
    if record.state is RunState.ABANDONED:
        state = "abandoned"
    else:
        state = _live_state(path, record.state is RunState.DONE)
    if record.summaries:
        totals = [sum(int(s.get(k) or 0) for s in record.summaries)
                  for k in ("rows_read", "created", "updated", "rejected")]
        rows_read, created, updated, rejected = totals
    else:  # unfinished: the rows settled so far
        counts = [_step_counts(db, step) for step in steps]
        created, updated = sum(c.created for c in counts), sum(c.updated for c in counts)
        rejected = sum(c.rejected for c in counts)
        rows_read = created + updated + rejected + sum(c.unchanged for c in counts)
    return JournalInfo(
        path, record.request.command, record.request.name, steps, record.request.inputs,
        state, rows_read, created, updated, rejected,
        _last_write(path, record.updated_at, *(u for *_, u in jobs)), record.exit_code)


def _describe_export(path: Path, db: sqlite3.Connection) -> JournalInfo:
    meta = dict(db.execute("select key, value from export_meta").fetchall())
    written = dict(db.execute("select dataset, sum(rows) from export_parts group by dataset "
                              "order by dataset").fetchall())
    objects = [name for name in written if "__" not in name]
    default = path.stem.removeprefix("export-") if path.stem.startswith("export-") else "?"
    name = str(meta.get("object") or (objects[0] if objects else default))
    return JournalInfo(
        path, "export", name, tuple(written), (),
        _live_state(path, meta.get("state") == "DONE"), int(written.get(name) or 0),
        None, None, None, _last_write(path))
