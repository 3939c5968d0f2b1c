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
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from engine.errors import CheckpointError

SCHEMA_VERSION = 2

_DDL = """
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
create table if not exists facts (key text primary key, value text not null);
"""

IN_FLIGHT = "IN_FLIGHT"
DONE = "DONE"


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
    step: str
    seq: int
    state: str
    rows: tuple[int, ...]
    keys: tuple[str, ...] | None
    attempts: int
    started_at: float | None


@dataclass(slots=True)
class Transition:
    """One batch's move in the journal; `apply` commits a list of them at once."""

    step: str
    seq: int
    state: str
    rows: Sequence[int] = ()
    keys: Sequence[str] | None = None
    results: Sequence[tuple[int, str, str]] = ()  # (source_row, id, action), as Result
    rejects: Sequence[Reject] = ()
    ids: Mapping[tuple[str, str, str], str] = field(default_factory=dict)
    edges: int = 0  # association batches: edges written


@dataclass(frozen=True, slots=True)
class Counts:
    created: int
    updated: int
    unchanged: int
    rejected: int


def _connect(path: Path, ddl: str, what: str) -> sqlite3.Connection:
    """A journal database: 0700 folder, 0600 files (also -wal/-shm), WAL, synchronous=FULL."""
    prepare_folder(path)
    for suffix in ("", "-wal", "-shm"):
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


def prepare_folder(path: Path) -> None:
    """Create the checkpoint's folder 0700 (and refuse one others can write into)."""
    folder = path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)


class SqliteCheckpoint:
    """The journal of one job. Use from one thread at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = _connect(path, _DDL, "checkpoint")
        version = self._one("select value from meta where key='schema'")
        if version is None:
            self._db.execute("insert into meta values ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(version) != SCHEMA_VERSION:
            raise CheckpointError(f"checkpoint {path} has schema {version}, this hsbulk "
                                  f"writes {SCHEMA_VERSION}; use a new --checkpoint")

    def close(self) -> None:
        self._db.close()

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
            self._db.execute("insert into job values (?, ?, ?, 'RUNNING', ?, ?)",
                             (key, spec_hash, prints, now, now))
            return False
        if row[0] != spec_hash:
            raise CheckpointError(
                f"checkpoint {self.path} belongs to a different job spec (flags, mapping or "
                "job file changed); use a new --checkpoint or restore the original command"
            )
        old = orjson.loads(row[1])
        changed = sorted(name for name, value in fingerprints.items() if old.get(name) != value)
        if changed:
            raise CheckpointError(
                f"input {', '.join(changed)} changed since checkpoint {self.path} was written; "
                "resuming would mix two inputs: restore the original file or use a new "
                "--checkpoint"
            )
        self._db.execute("update job set state='RUNNING', updated_at=? where key=?", (now, key))
        return True

    def set_job_state(self, key: str, state: str) -> None:
        self._db.execute("update job set state=?, updated_at=? where key=?",
                         (state, time.time(), key))

    def get_fact(self, key: str) -> str | None:
        value = self._one("select value from facts where key=?", (key,))
        return None if value is None else str(value)

    def set_fact(self, key: str, value: str) -> None:
        self._db.execute("insert or replace into facts values (?, ?)", (key, value))

    # -- batches --------------------------------------------------------------------

    def batches(self, step: str) -> dict[int, BatchRecord]:
        out: dict[int, BatchRecord] = {}
        for seq, state, rows, keys, attempts, started in self._db.execute(
            "select seq, state, rows, keys, attempts, started_at from batches where step=?",
            (step,),
        ):
            out[seq] = BatchRecord(step, seq, state, tuple(orjson.loads(rows)),
                                   tuple(orjson.loads(keys)) if keys is not None else None,
                                   attempts, started)
        return out

    def apply(self, transitions: Iterable[Transition]) -> None:
        """Commit every transition in one transaction (one fsync)."""
        now = time.time()
        db = self._db
        db.execute("begin immediate")
        try:
            for t in transitions:
                if t.state == IN_FLIGHT:
                    db.execute(
                        "insert into batches (step, seq, state, first_row, last_row, rows, "
                        "keys, attempts, started_at) values (?, ?, ?, ?, ?, ?, ?, 1, ?) "
                        "on conflict (step, seq) do update set state=excluded.state, "
                        "attempts=attempts+1, started_at=excluded.started_at",
                        (t.step, t.seq, IN_FLIGHT, t.rows[0], t.rows[-1],
                         orjson.dumps(list(t.rows)),
                         None if t.keys is None else orjson.dumps(list(t.keys)), now),
                    )
                    continue
                # One row per batch, results as one blob: 100 row inserts per batch
                # were most of the journal's cost.
                rows, ids, actions = (list(c) for c in zip(*t.results, strict=True)) if (
                    t.results) else ([], [], [])
                db.execute(
                    "update batches set state=?, results=?, created=?, updated=?, unchanged=? "
                    "where step=? and seq=?",
                    (t.state, orjson.dumps([rows, ids, actions]),
                     actions.count("created") + t.edges,
                     actions.count("updated"), actions.count("unchanged"), t.step, t.seq))
                if t.rejects:
                    self._insert_rejects(t.step, t.rejects)
                if t.ids:
                    db.executemany(
                        "insert or replace into idmap values (?, ?, ?, ?)",
                        [(obj, prop, key.lower(), rid)
                         for (obj, prop, key), rid in t.ids.items()],
                    )
            db.execute("commit")
        except BaseException:
            db.execute("rollback")
            raise

    def _insert_rejects(self, step: str, rejects: Iterable[Reject]) -> None:
        self._db.executemany(
            "insert or ignore into rejects values (?, ?, ?, ?, ?, ?, ?)",
            [(step, r.source_row, r.column, r.code, r.value, r.message, int(r.counted))
             for r in rejects],
        )

    def record_rejects(self, step: str, rejects: Iterable[Reject]) -> None:
        """Local (pre-send) rejects; recorded again on every run, idempotently."""
        self._db.execute("begin immediate")
        try:
            self._insert_rejects(step, rejects)
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            raise

    # -- reading back ---------------------------------------------------------------

    def counts(self, step: str) -> Counts:
        created, updated, unchanged = self._db.execute(
            "select coalesce(sum(created), 0), coalesce(sum(updated), 0), "
            "coalesce(sum(unchanged), 0) from batches where step=? and state=?",
            (step, DONE)).fetchone()
        rejected = self._one(
            "select count(distinct source_row) from rejects where step=? and counted=1", (step,))
        return Counts(created, updated, unchanged, int(rejected or 0))

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

    def iter_rejects(self, step: str, chunk: int = 50_000) -> Iterator[list[tuple[Any, ...]]]:
        cursor = self._db.execute(
            "select source_row, col, value, code, message from rejects where step=? "
            "order by source_row, col", (step,))
        while rows := cursor.fetchmany(chunk):
            yield rows

    def reject_rows(self, step: str) -> set[int]:
        return {row for (row,) in self._db.execute(
            "select distinct source_row from rejects where step=?", (step,))}

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


_EXPORT_DDL = """
create table if not exists export_meta (key text primary key, value text not null);
create table if not exists export_ranges (
    id integer primary key, kind text not null, lo integer not null, hi integer not null,
    cursor integer, after text, state text not null);
create table if not exists export_parts (
    dataset text not null, part integer not null, range_id integer, path text,
    rows integer not null, max_modified text,
    primary key (dataset, part)) without rowid;
"""


@dataclass(frozen=True, slots=True)
class ExportRange:
    """An `hs_object_id` range [lo, hi) of one export and how far it has been written."""

    id: int
    kind: str  # list | search
    lo: int
    hi: int
    cursor: int | None  # the last id written to a part file
    after: str | None  # the list cursor's opaque token after that id
    state: str  # OPEN | DONE


@dataclass(frozen=True, slots=True)
class ExportPart:
    dataset: str  # the object, or `object__to` for an edge table
    part: int
    range_id: int | None
    path: str | None  # relative to the output folder; None: nothing to write (no edges)
    rows: int
    max_modified: str | None


class ExportJournal:
    """The journal of one export, in its own SQLite file (WAL, synchronous=FULL, 0600).

    A range's cursor moves only in the transaction that records the part file holding
    the rows up to it, so a part is either journaled with its cursor or an orphan the
    next run deletes; a resumed export re-reads nothing it has journaled and writes no
    row twice. Splitting a range (rebalancing) is one transaction too.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = _connect(path, _EXPORT_DDL, "export checkpoint")

    def close(self) -> None:
        self._db.close()

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
        state = self.get("state")
        if old is not None and state != "DONE":
            if old != spec_hash:
                raise CheckpointError(
                    f"export checkpoint {self.path} holds an unfinished export with other "
                    "options; re-run that command to finish it, or use another --checkpoint")
            return True, str(self.get("started_at"))
        self._tx([("delete from export_meta", ()), ("delete from export_ranges", ()),
                  ("delete from export_parts", ()),
                  ("insert into export_meta values ('spec_hash', ?)", (spec_hash,)),
                  ("insert into export_meta values ('started_at', ?)", (started_at,)),
                  ("insert into export_meta values ('state', 'PLANNING')", ())])
        return False, started_at

    def set(self, key: str, value: str) -> None:
        self._tx([("insert or replace into export_meta values (?, ?)", (key, value))])

    def set_state(self, state: str) -> None:
        self.set("state", state)

    def plan(self, ranges: Iterable[tuple[str, int, int]]) -> None:
        """The first ranges (kind, lo, hi), together with the end of planning."""
        self._tx([*(("insert into export_ranges (kind, lo, hi, state) values (?, ?, ?, 'OPEN')",
                     r) for r in ranges),
                  ("insert or replace into export_meta values ('state', 'RUNNING')", ())])

    def ranges(self) -> list[ExportRange]:
        return [ExportRange(*row) for row in self._db.execute(
            "select id, kind, lo, hi, cursor, after, state from export_ranges order by lo")]

    def split(self, range_id: int, mid: int) -> int:
        """Cut range `range_id` at `mid`: it keeps [lo, mid), a new search range [mid, hi)."""
        db = self._db
        db.execute("begin immediate")
        try:
            (hi,) = db.execute("select hi from export_ranges where id=?", (range_id,)).fetchone()
            db.execute("update export_ranges set hi=? where id=?", (mid, range_id))
            new = db.execute("insert into export_ranges (kind, lo, hi, state) "
                             "values ('search', ?, ?, 'OPEN')", (mid, hi)).lastrowid
            db.execute("commit")
        except BaseException:
            db.execute("rollback")
            raise
        assert new is not None
        return int(new)

    def advance(self, range_id: int, cursor: int | None, after: str | None, done: bool,
                part: ExportPart | None) -> None:
        """Record a written part and move its range's cursor, in one transaction."""
        statements: list[tuple[str, Sequence[Any]]] = [(
            "update export_ranges set cursor=coalesce(?, cursor), after=?, state=? where id=?",
            (cursor, after, "DONE" if done else "OPEN", range_id))]
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
