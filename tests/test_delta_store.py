"""The `--delta` state store (engine.journal.DeltaStore): what it confirms, merges and finds."""

import json
import os
import random

import orjson
import pytest

from engine.errors import CheckpointError
from engine.journal import DeltaStore, Edge, SqliteCheckpoint, journal_kind


def _props(text: str) -> dict:
    return json.loads(text)


def test_state_file_is_private_and_refuses_journals(tmp_path):
    path = tmp_path / "state" / "contacts.db"
    DeltaStore(path).close()
    assert journal_kind(path) == "delta"
    assert os.stat(path.parent).st_mode & 0o777 == 0o700
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            assert os.stat(f"{path}{suffix}").st_mode & 0o777 == 0o600
    with pytest.raises(CheckpointError, match="a --delta state"):
        SqliteCheckpoint(path)
    journal = tmp_path / "journal.db"
    SqliteCheckpoint(journal).close()
    with pytest.raises(CheckpointError, match="import/run"):
        DeltaStore(journal)


def test_identity_is_kept_and_checked(tmp_path):
    path = tmp_path / "s.db"
    DeltaStore(path, "contacts by email at a").close()
    DeltaStore(path, "contacts by email at a").close()
    with pytest.raises(CheckpointError, match="belongs to contacts by email at a"):
        DeltaStore(path, "companies by domain at a")


def test_confirm_merges_sent_properties_and_lookup_reads_them(tmp_path):
    store = DeltaStore(tmp_path / "s.db")
    run = store.begin_run()
    store.confirm([("a@x.io", "1", '{"email":"a@x.io","city":"Paris","age":"3"}')], run)
    store.confirm_inputs([("a@x.io", "1", '{"id":"a@x.io","idProperty":"email",'
                           '"properties":{"city":"Lyon"},"objectWriteTraceId":"7"}')], run)
    assert store.size() == 1
    rid, props = store.lookup(["a@x.io", "missing"])["a@x.io"]
    assert rid == "1"
    assert _props(props) == {"email": "a@x.io", "city": "Lyon", "age": "3"}
    store.confirm([("a@x.io", "1", b'{"email":"a@x.io"}')], run, merge=False)  # refresh
    assert _props(store.lookup(["a@x.io"])["a@x.io"][1]) == {"email": "a@x.io"}
    store.close()


def test_lookup_as_of_answers_what_the_run_started_with(tmp_path):
    """A resumed run diffs against the state its first attempt saw."""
    store = DeltaStore(tmp_path / "s.db")
    first = store.begin_run()
    store.confirm([("a", "1", '{"v":"1"}')], first)
    store.finish_run(first)
    second = store.begin_run()
    assert second > first
    store.confirm([("a", "1", '{"v":"2"}'), ("b", "2", '{"v":"9"}')], second)
    store.confirm([("a", "1", '{"v":"3"}')], second)  # written twice in the run
    as_of = {k: (rid, _props(p)) for k, rid, p in store.lookup_as_of(["a", "b"], second)}
    assert as_of == {"a": ("1", {"v": "1"})}  # b is new in this run: absent as of its start
    assert store.begin_run() == second  # unfinished: resumed
    store.finish_run(second)
    third = store.begin_run()
    as_of = {k: _props(p) for k, _, p in store.lookup_as_of(["a", "b"], third)}
    assert as_of == {"a": {"v": "3"}, "b": {"v": "9"}}
    store.close()


def test_a_fresh_run_abandons_the_unfinished_one(tmp_path):
    store = DeltaStore(tmp_path / "s.db")
    first = store.begin_run()
    store.confirm([("a", "1", '{"v":"1"}')], first)
    second = store.begin_run(resume=False)
    assert second != first
    assert [k for k, *_ in store.lookup_as_of(["a"], second)] == ["a"]
    assert store.last_finished_run() is None
    store.finish_run(second)
    assert store.last_finished_run() == second
    store.close()


def test_seen_absent_sample_and_forget(tmp_path):
    store = DeltaStore(tmp_path / "s.db")
    night1 = store.begin_run()
    store.mark_seen([f"k{i}" for i in range(10)], night1)
    store.confirm([(f"k{i}", str(i), '{"v":"1"}') for i in range(10)], night1)
    store.finish_run(night1)
    assert list(store.absent(night1)) == []
    night2 = store.begin_run()
    store.mark_seen([f"k{i}" for i in range(6)], night2)  # k6..k9 gone from the input
    store.confirm([("k0", "0", '{"v":"2"}')], night2)  # k0 changed (written tonight)
    assert list(store.absent(night2)) == [("k6", "6"), ("k7", "7"), ("k8", "8"),
                                           ("k9", "9")]
    sample = store.unchanged_sample(100, night2, random.Random(1))
    assert sorted(k for k, *_ in sample) == ["k1", "k2", "k3", "k4", "k5"]
    assert all(_props(p) == {"v": "1"} for _, _, p in sample)
    few = store.unchanged_sample(2, night2, random.Random(1))
    assert len(few) == 2 and {k for k, *_ in few} <= {"k1", "k2", "k3", "k4", "k5"}
    store.forget(["k6", "k7"])
    assert [k for k, _ in store.absent(night2)] == ["k8", "k9"]
    assert store.size() == 8
    store.close()


def test_edges_confirmed_seen_absent_and_forgotten(tmp_path):
    store = DeltaStore(tmp_path / "s.db")
    night1 = store.begin_run()
    e1 = Edge("a@x.io", "companies", "11", 1)
    e2 = Edge("a@x.io", "companies", "12", 1, "HUBSPOT_DEFINED")
    e3 = Edge("b@x.io", "deals", "21", 4, "USER_DEFINED")
    store.confirm_edges([e1, e2, e3], night1)
    store.confirm_edges([e1], night1)  # idempotent
    assert store.edges_of(["a@x.io"]) == [e1, e2]
    store.finish_run(night1)
    night2 = store.begin_run()
    store.mark_edges_seen([e1, e3], night2)
    assert list(store.absent_edges(night2)) == [e2]
    store.forget_edges([e2])
    assert list(store.absent_edges(night2)) == []
    store.forget(["b@x.io"])  # a forgotten record takes its edges along
    assert store.edges_of(["a@x.io", "b@x.io"]) == [e1]
    store.close()


def test_a_tagged_run_is_taken_again_even_when_finished(tmp_path):
    """A journal run resumed after the state finished its run diffs as its first attempt."""
    store = DeltaStore(tmp_path / "s.db")
    first = store.begin_run("journal-run-1")
    store.confirm([("a", "1", '{"v":"1"}')], first)
    store.finish_run(first)
    assert store.begin_run("journal-run-1") == first
    assert store.lookup_as_of(["a"], first) == []  # created in that run
    second = store.begin_run("journal-run-2")
    assert second != first
    assert [k for k, *_ in store.lookup_as_of(["a"], second)] == ["a"]
    store.close()


def test_the_properties_of_an_input_are_cut_out_exactly():
    from engine.imports.writer import properties_of

    props = '{"firstname":"A \\",\\"associations\\":[","lastname":"B"}'
    for sent in ('{"id":"a@x.io","idProperty":"email","properties":' + props
                 + ',"objectWriteTraceId":"7"}',
                 '{"properties":' + props + ',"associations":[{"to":{"id":"1"}}],'
                 '"objectWriteTraceId":"8"}',
                 '{"id":"12","properties":' + props + '}'):
        assert orjson.loads(properties_of(sent)) == orjson.loads(props)
