import os

import pytest

from engine.errors import CheckpointError
from engine.journal import (
    BatchState,
    Reject,
    Result,
    RunInput,
    RunRequest,
    SqliteCheckpoint,
    Transition,
    describe_journal,
)


def test_job_spec_and_inputs_must_match_on_resume(tmp_path):
    path = tmp_path / "state" / "job.db"
    cp = SqliteCheckpoint(path)
    assert cp.open_job("contacts", "spec-1", {"contacts": "fp-1"}) is False
    assert cp.open_job("contacts", "spec-1", {"contacts": "fp-1"}) is True
    with pytest.raises(CheckpointError, match="different job spec"):
        cp.open_job("contacts", "spec-2", {"contacts": "fp-1"})
    with pytest.raises(CheckpointError, match="input contacts changed"):
        cp.open_job("contacts", "spec-1", {"contacts": "fp-2"})
    cp.close()


def test_files_are_private(tmp_path):
    path = tmp_path / "state" / "job.db"
    SqliteCheckpoint(path).close()
    assert os.stat(path.parent).st_mode & 0o777 == 0o700
    for suffix in ("", "-wal", "-shm"):
        target = f"{path}{suffix}"
        if os.path.exists(target):
            assert os.stat(target).st_mode & 0o777 == 0o600


def test_transitions_and_the_account(tmp_path):
    cp = SqliteCheckpoint(tmp_path / "j.db")
    cp.open_job("s", "h", {})
    cp.begin_batches("s", [(0, [1, 2, 3], ["a", "b", "c"]), (1, [4, 5], ["d", "e"])])
    batches = cp.batches("s")
    assert batches[0].state is BatchState.IN_FLIGHT and batches[0].keys == ("a", "b", "c")
    cp.finish_batch("s", 0, results=[Result(1, "101", "created"), Result(2, "102", "updated")],
                    rejects=[Reject(3, "email", "INVALID_EMAIL", "bad", "x")],
                    ids={("contacts", "email", "a"): "101"})
    cp.record_rejects("s", [Reject(9, "date", "INVALID_DATE", "no", "2023-02-29")])
    cp.record_rejects("s", [Reject(9, "date", "INVALID_DATE", "no", "2023-02-29")])  # re-run
    counts = cp.counts("s")
    assert (counts.created, counts.updated, counts.rejected) == (1, 1, 2)
    assert cp.batches("s")[0].state is BatchState.DONE
    assert cp.batches("s")[1].state is BatchState.IN_FLIGHT
    assert cp.lookup_ids("contacts", "email", ["a", "zz"]) == {"a": "101"}
    cp.remember_ids({("companies", "domain", "Acme.COM"): "7"})
    assert cp.lookup_ids("companies", "domain", ["acme.com"]) == {"acme.com": "7"}
    cp.begin_batches("s", [(1, [4, 5], ["d", "e"])])  # resent after a crash: still in flight
    assert cp.batches("s")[1].state is BatchState.IN_FLIGHT
    cp.close()


def test_association_edges_count_as_created_and_survive_a_reopen(tmp_path):
    cp = SqliteCheckpoint(tmp_path / "j.db")
    cp.apply([Transition.begin("a>b", 0, [1, 2, 3])])
    cp.record_edges("a>b", 0, 2, [Reject(3, "", "ASSOCIATION_FAILED", "gone")])
    cp.close()
    cp = SqliteCheckpoint(tmp_path / "j.db")
    counts = cp.counts("a>b")
    assert (counts.created, counts.rejected) == (2, 1)
    assert cp.batches("a>b")[0].state is BatchState.DONE
    cp.close()


def test_a_failed_group_commits_nothing(tmp_path):
    cp = SqliteCheckpoint(tmp_path / "j.db")
    with pytest.raises(IndexError):
        cp.apply([Transition.begin("s", 0, [1]), Transition.begin("s", 1, [])])
    assert cp.batches("s") == {}
    cp.close()


def request(fingerprint: str, spec: str = "spec") -> RunRequest:
    return RunRequest("import", "contacts", spec, (RunInput("import", "/in.csv", fingerprint),))


def test_a_journal_holds_one_run_and_keeps_the_earlier_ones_beside_it(tmp_path):
    path = tmp_path / "j.db"
    cp = SqliteCheckpoint(path)
    try:
        assert cp.begin_run(request("a")) is None
        assert cp.begin_run(request("a")) is None  # resume
        with pytest.raises(CheckpointError, match="--restart"):
            cp.begin_run(request("b"))
        with pytest.raises(CheckpointError, match="--restart"):
            cp.begin_run(request("a", spec="other"))
        cp.begin_run(request("b"), restart=True)  # "a" abandoned and archived
        cp.finish_run([{"step": "import", "rows_read": 2}], 1)
        finished = cp.begin_run(request("b"))
        assert finished is not None and finished.exit_code == 1
        assert finished.summaries == ({"step": "import", "rows_read": 2},)
        assert cp.begin_run(request("c")) is None  # "b" archived, done
        record = cp.run_record()
        assert record is not None and record.request.inputs[0].fingerprint == "c"
    finally:
        cp.close()
    states = sorted((p.name != "j.db", describe_journal(p).state)
                    for p in tmp_path.glob("j*.db"))
    assert states == [(False, "interrupted"), (True, "abandoned"), (True, "done")]


def test_a_second_writer_is_refused_while_the_first_holds_the_journal(tmp_path):
    first = SqliteCheckpoint(tmp_path / "j.db")
    try:
        with pytest.raises(CheckpointError, match="in use"):
            SqliteCheckpoint(tmp_path / "j.db")
    finally:
        first.close()
    SqliteCheckpoint(tmp_path / "j.db").close()
