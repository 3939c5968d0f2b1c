"""Reading HubSpot's answer to a batch write: pure functions fed hand-built bodies."""

import orjson
import pytest

from engine.batch import Batch
from engine.imports.answers import Keys, read_answer
from engine.journal import Reject

KEYS = Keys(column="email", prop="email", object_name="contacts", remember=False)


def batch(rows=(1, 2, 3), keys=("a@x.io", "b@x.io", "c@x.io")):
    return Batch(0, list(rows), list(keys), ["{}"] * len(rows), [k.lower() for k in keys])


def body(results=(), errors=None, **extra):
    answer = {"status": "COMPLETE", "results": list(results), **extra}
    if errors is not None:
        answer["errors"] = errors
    return orjson.dumps(answer)


def result(rid, trace=None, **fields):
    out = {"id": rid, "properties": {"hs_object_id": rid, "note": 'x","id":"99'}, **fields}
    if trace is not None:
        out["objectWriteTraceId"] = str(trace)
    return out


@pytest.mark.parametrize(("mode", "results", "want"), [
    ("create", [result("11", 2), result("10", 1), result("12", 3)],
     [(2, "11", "created"), (1, "10", "created"), (3, "12", "created")]),
    ("update", [result("10", 1), result("11", 2), result("12", 3)],
     [(1, "10", "updated"), (2, "11", "updated"), (3, "12", "updated")]),
    ("upsert", [result("5", 1, new=False), result("6", 2, new=True), result("7", 3, new=True)],
     [(1, "5", "updated"), (2, "6", "created"), (3, "7", "created")]),
])
def test_a_clean_answer_places_every_row_by_its_trace_id(mode, results, want):
    answer = read_answer(200, body(results), batch(), [0, 1, 2], mode, KEYS)
    assert answer.sent.results == want
    assert (answer.sent.rejects, answer.conflicts, answer.resend) == ([], [], [])


def test_results_without_a_trace_are_placed_by_their_key():
    results = [{"id": "5", "properties": {"email": "B@X.IO"}, "new": True},
               {"id": "6", "properties": {"email": "a@x.io"}},
               {"id": "7", "properties": {"email": "c@x.io"}, "objectWriteTraceId": "3"}]
    answer = read_answer(200, body(results), batch(), [0, 1, 2], "upsert", KEYS)
    assert sorted(answer.sent.results) == [(1, "6", "updated"), (2, "5", "created"),
                                           (3, "7", "updated")]


def test_ids_are_remembered_by_key_when_the_step_keeps_them():
    keys = Keys(column="email", prop="email", object_name="contacts", remember=True)
    answer = read_answer(200, body([result("10", 1), result("11", 2)]),
                         batch((1, 2), ("A@x.io", "b@x.io")), [0, 1], "create", keys)
    assert answer.sent.ids == {("contacts", "email", "A@x.io"): "10",
                               ("contacts", "email", "b@x.io"): "11"}


def error(message, category="VALIDATION_ERROR", status="error", **context):
    return {"status": status, "category": category, "message": message, "context": context,
            "errors": [{"code": "INVALID_EMAIL", "context": {"propertyName": ["email"]}}]}


def test_a_multi_status_answer_splits_written_refused_and_taken_rows():
    errors = [error("bad email", objectWriteTraceId=["2"]),
              error("already exists", category="CONFLICT", objectWriteTraceId=["3"])]
    answer = read_answer(207, body([result("10", 1)], errors), batch(), [0, 1, 2], "create",
                         KEYS)
    assert answer.sent.results == [(1, "10", "created")]
    assert answer.sent.rejects == [Reject(2, "email", "INVALID_EMAIL", "bad email", None)]
    assert answer.conflicts == [2]  # creates HubSpot calls taken are read back, not rejected
    assert answer.resend == []


def test_errors_without_trace_ids_are_placed_by_the_ids_they_name():
    errors = [error("no such record", category="OBJECT_NOT_FOUND", ids=["C@X.IO"])]
    answer = read_answer(207, body([result("10", 1), result("11", 2)], errors), batch(),
                         [0, 1, 2], "update", KEYS)
    assert [r.source_row for r in answer.sent.rejects] == [3]
    assert answer.conflicts == []  # a conflict is a create's only


@pytest.mark.parametrize(("raw", "resend", "rejected"), [
    (body([result("10", 1)]), [1, 2], []),  # partly answered: send the rest again
    (body([]), [], [1, 2, 3]),  # nothing answered: every row is rejected
    (b"<html>bad gateway</html>", [], [1, 2, 3]),  # unreadable: nothing can be claimed
    (b"", [], [1, 2, 3]),
])
def test_rows_neither_written_nor_refused(raw, resend, rejected):
    answer = read_answer(200, raw, batch(), [0, 1, 2], "create", KEYS)
    assert answer.resend == resend
    assert [r.source_row for r in answer.sent.rejects] == rejected
    assert {r.code for r in answer.sent.rejects} <= {"NO_RESULT"}


def test_a_result_for_a_row_not_in_this_send_is_ignored():
    answer = read_answer(200, body([result("10", 1), result("99", 7), result("10", 1)]),
                         batch(), [0], "create", KEYS)
    assert answer.sent.results == [(1, "10", "created")]


def test_numeric_trace_ids_place_their_rows_like_text_ones():
    results = [{"id": "10", "objectWriteTraceId": 1}, {"id": "11", "objectWriteTraceId": 2},
               {"id": "12", "objectWriteTraceId": 3}]
    answer = read_answer(201, body(results), batch(), [0, 1, 2], "create", KEYS)
    assert answer.sent.results == [(1, "10", "created"), (2, "11", "created"),
                                   (3, "12", "created")]
    assert (answer.sent.rejects, answer.conflicts, answer.resend) == ([], [], [])

