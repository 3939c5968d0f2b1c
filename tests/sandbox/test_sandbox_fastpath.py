"""The column-wise batch create fast paths answer and store exactly what the per-input paths do.

Pure tests, no event loop: the same batch goes into two fresh sandboxes, one through
`objects.batch_create` (fast path when it applies) and one through the per-input path; the
decoded answers, the stored records, the unique indexes and the audit must be identical.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.sandbox import fastpath, objects
from engine.sandbox.errors import ApiError
from engine.sandbox.properties import create_property
from engine.sandbox.server import State, audit_report, records_dump
from engine.sandbox.settings import SandboxSettings

FIXED_MS = 1_700_000_000_123


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both paths stamp the same times, so answers compare whole."""
    for module in (objects, fastpath):
        monkeypatch.setattr(module, "now_ms", lambda: FIXED_MS)


def fresh(lean: bool) -> State:
    state = State(SandboxSettings(rate_requests=None, search_rate_per_s=None, lean=lean))
    contacts = state.portal.store("contacts")
    create_property(contacts, {"name": "member_code", "label": "Member code", "type": "string",
                               "fieldType": "text", "groupName": "contactinformation",
                               "hasUniqueValue": True})
    return state


FAST: list[bool] = []  # per outcome(): whether a fast path answered (pre-encoded bytes)


def outcome(call: Any) -> tuple[int, Any]:
    """(status, decoded body) of an Answer or an ApiError, correlation ids dropped."""
    try:
        status, payload = call()
    except ApiError as exc:
        status, payload = exc.status, exc.body
    FAST.append(isinstance(payload, bytes))
    body = orjson.loads(payload) if isinstance(payload, bytes) else payload
    if isinstance(body, dict):
        body.pop("correlationId", None)
    return status, body


def held(state: State) -> dict[str, Any]:
    """Everything a batch create can change: records (with times), order, indexes, the audit,
    and the next id the portal hands out."""
    store = state.portal.store("contacts")
    return {
        "records": [(r.id, r.props, r.created_ms, r.updated_ms, r.archived_ms)
                    for r in store.records.values()],
        "dump": records_dump(state, "contacts"),
        "order": list(store.order),
        "unique": {name: dict(index) for name, index in store.unique.items()},
        "audit": audit_report(state, "contacts:email,contacts:member_code"),
        "next_id": state.portal.next_id(),
    }


Outcomes = tuple[list[tuple[int, Any]], list[tuple[int, Any]], State, State]


def both(batches: list[list[Any]], lean: bool, raw: bool = False) -> Outcomes:
    """Send the batches through batch_create (fast path first) and through the per-input
    path on two fresh sandboxes. `raw`: as the server does, first from the request's bytes
    (`batch_create_raw`), then decoded."""
    each_path = objects.lean_create_each if lean else objects.create_each
    fast_state, each_state = fresh(lean), fresh(lean)
    fast_store, each_store = (s.portal.store("contacts") for s in (fast_state, each_state))
    fast_out, each_out = [], []
    for inputs in batches:
        body = {"inputs": inputs}
        traced = objects.is_traced(inputs)
        fast_out.append(outcome(
            lambda b=body: (raw and objects.batch_create_raw(fast_store, orjson.dumps(b)))
            or objects.batch_create(fast_store, b)))
        each_out.append(outcome(
            lambda i=inputs, t=traced: each_path(each_store, i, t, FIXED_MS)))
    return fast_out, each_out, fast_state, each_state


def lean_both(batches: list[list[Any]], raw: bool = False) -> Outcomes:
    return both(batches, True, raw)


def contact(n: int, trace: bool, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"properties": {"email": f"p{n}@example.com", "firstname": f"F{n}",
                                           "lifecyclestage": "lead", **extra}}
    if trace:
        item["objectWriteTraceId"] = f"row-{n}"
    return item


LEAN_CASES = {
    "traced": [[contact(n, True) for n in range(100)], [contact(n, True) for n in range(100, 150)]],
    "untraced": [[contact(n, False) for n in range(100)]],
    "no unique value given": [[{"properties": {"firstname": f"F{n}"}} for n in range(5)]],
    "two unique properties": [[contact(n, True, member_code=f"M-{n}") for n in range(20)]],
    "values that need escaping": [[
        {"properties": {"email": 'q"uote\\@example.com', "member_code": "tab\there"},
         "objectWriteTraceId": 'row-"1"-%s'},
        {"properties": {"email": "ünï@exämple.com", "member_code": "\u2028 ✓ 100%"},
         "objectWriteTraceId": "row-ü"},
        {"properties": {"email": "ctl\x01@example.com", "member_code": "%d %%"},
         "objectWriteTraceId": "</script>"},
    ]],
    "empty properties": [[{"properties": {}}, {"properties": {}}]],
    "one input object three times": [[{"properties": {"firstname": "Same"}}] * 3],
    "a trace id that is not a string": [[{**contact(1, False), "objectWriteTraceId": 5},
                                         contact(2, True)]],
    "empty inline associations": [[{**contact(1, True), "associations": []}]],
    "mixed case unique values": [[contact(n, True, email=f"Mixed.{n}@Example.COM")
                                  for n in range(5)]],
    "a unique value holding a line break": [[contact(1, True, email="Line\nBreak@X.io"),
                                             contact(2, True, email="Two@X.io")]],
    "keys the lean path does not read": [[{**contact(1, True), "idProperty": "email",
                                           "extra": {"deep": [1, 2]}}]],
}


@pytest.mark.parametrize("raw", [False, True], ids=["decoded", "from bytes"])
@pytest.mark.parametrize("batches", LEAN_CASES.values(), ids=LEAN_CASES.keys())
def test_lean_fast_path_answers_and_stores_what_the_per_input_path_does(batches, raw):
    FAST.clear()
    fast_out, each_out, fast_state, each_state = lean_both(batches, raw)
    assert FAST[::2] == [True] * len(batches)
    assert fast_out == each_out
    assert held(fast_state) == held(each_state)


def test_lean_fast_path_answer_is_bytes_the_per_input_path_a_dict():
    """The fast path did run (else the comparisons above prove nothing)."""
    store = fresh(True).portal.store("contacts")
    status, payload = objects.batch_create(store, {"inputs": [contact(1, True)]})
    assert status == 201 and isinstance(payload, bytes)
    assert orjson.loads(payload)["results"][0]["properties"]["email"] == "p1@example.com"


DECLINED = {
    "taken value": [[contact(1, True)], [contact(2, True), contact(1, True)]],
    "taken value, other case": [[contact(1, False)],
                                [{"properties": {"email": "P1@EXAMPLE.com"}}]],
    "duplicate within the batch": [[contact(1, False), contact(1, False)]],
    "some inputs without the unique value": [[contact(1, True),
                                              {"properties": {"firstname": "x"},
                                               "objectWriteTraceId": "t"}]],
    "empty unique value": [[contact(1, True), contact(2, True, email="")]],
    "number as unique value": [[contact(1, True, member_code=7), contact(2, True)]],
    "null as unique value": [[contact(1, True, email=None), contact(2, True)]],
    "properties not an object": [[contact(1, True),
                                  {"properties": ["x"], "objectWriteTraceId": "t"}]],
    "input not an object": [[contact(1, False), "nope"]],
}


@pytest.mark.parametrize("raw", [False, True], ids=["decoded", "from bytes"])
@pytest.mark.parametrize("batches", DECLINED.values(), ids=DECLINED.keys())
def test_batches_the_lean_fast_path_declines_get_the_per_input_answers(batches, raw):
    FAST.clear()
    fast_out, each_out, fast_state, each_state = lean_both(batches, raw)
    assert fast_out == each_out
    assert held(fast_state) == held(each_state)
    assert not FAST[-2], "the last batch should have gone input by input"


emails = st.sampled_from(["a@x.io", "A@X.io", "b@x.io", "c@x.io", "", None, 5])
inputs_strategy = st.lists(
    st.fixed_dictionaries(
        {"properties": st.fixed_dictionaries({}, optional={"email": emails,
                                                           "member_code": emails})},
        optional={"objectWriteTraceId": st.sampled_from(["t1", "t2", 'q"'])},
    ),
    min_size=0, max_size=6,
)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(inputs_strategy, min_size=1, max_size=3), raw=st.booleans())
def test_lean_fast_path_agrees_with_the_per_input_path_on_any_batch(batches, raw):
    fast_out, each_out, fast_state, each_state = lean_both(batches, raw)
    assert fast_out == each_out
    assert held(fast_state) == held(each_state)


# --- validated ----------------------------------------------------------------------------


def validated_both(batches: list[list[Any]]) -> Outcomes:
    return both(batches, False)


def bench_contact(n: int, trace: bool = True) -> dict[str, Any]:
    item: dict[str, Any] = {"properties": {
        "email": f"r-{n}@bench.example.com", "firstname": f"First{n}", "lastname": f"Last{n}",
        "phone": f"+1555{n:07d}", "company": f"Company {n % 7}",
        "website": f"https://c{n % 7}.example.com", "city": "Springfield",
        "lifecyclestage": "lead", "date_of_birth": "1990-01-31", "hs_email_optout": "false",
    }}
    if trace:
        item["objectWriteTraceId"] = str(n)
    return item


def with_props(item: dict[str, Any], **changes: Any) -> dict[str, Any]:
    props = {k: v for k, v in {**item["properties"], **changes}.items() if v is not DROP}
    return {**item, "properties": props}


DROP = object()

VALIDATED_CASES = {
    "bench batch, traced": [[bench_contact(n) for n in range(100)],
                            [bench_contact(n) for n in range(100, 200)]],
    "bench batch, untraced": [[bench_contact(n, trace=False) for n in range(100)]],
    "values the rules rewrite": [[
        with_props(bench_contact(n), date_of_birth="631065600000", total_revenue=" 12.50 ",
                   hs_last_sales_activity_timestamp="2024-03-01T10:00:00+02:00",
                   hs_buying_role=";CHAMPION;BLOCKER;CHAMPION", member_code=f"m{n}")
        for n in range(30)
    ]],
    "empty values clear": [[
        with_props(bench_contact(n), city="", lifecyclestage="", hs_buying_role=";",
                   phone="" if n % 2 else "+1")
        for n in range(10)
    ]],
    "inputs giving different properties": [[
        with_props(bench_contact(n), **({"lastname": DROP, "city": DROP} if n % 3 else
                                        {"email": DROP, "member_code": f"M{n}"}))
        for n in range(12)
    ]],
    "required only by some columns": [[
        {"properties": {"email": "x@example.com"}}, {"properties": {"firstname": "Only"}},
        {"properties": {"lastname": "L", "email": ""}},
    ]],
    "some inputs traced": [[bench_contact(1), bench_contact(2, trace=False)]],
    "one input object three times": [[{"properties": {"firstname": "Same"}}] * 3],
    "escapes and unicode": [[
        {"properties": {"email": "ü@exämple.com", "firstname": 'q"\\\n\u2028', "city": "✓"},
         "objectWriteTraceId": '"%s'},
    ]],
}


@pytest.mark.parametrize("batches", VALIDATED_CASES.values(), ids=VALIDATED_CASES.keys())
def test_validated_fast_path_answers_and_stores_what_the_per_input_path_does(batches):
    FAST.clear()
    fast_out, each_out, fast_state, each_state = validated_both(batches)
    assert FAST[::2] == [True] * len(batches)
    assert fast_out == each_out
    assert held(fast_state) == held(each_state)


def test_validated_fast_path_did_run_on_the_bench_batch():
    store = fresh(False).portal.store("contacts")
    status, payload = objects.batch_create(store, {"inputs": [bench_contact(1)]})
    assert status == 201 and isinstance(payload, bytes)
    assert orjson.loads(payload)["results"][0]["properties"]["lifecyclestage"] == "lead"


VALIDATED_DECLINED = {
    "invalid option, traced": [[bench_contact(1), with_props(bench_contact(2),
                                                             lifecyclestage="nope")]],
    "invalid option, untraced": [[bench_contact(1, False),
                                  with_props(bench_contact(2, False), lifecyclestage="x")]],
    "bad email": [[with_props(bench_contact(1), email="not-an-email"), bench_contact(2)]],
    "bad date and bool": [[with_props(bench_contact(1), date_of_birth="1990-02-30",
                                      hs_email_optout="yes")]],
    "date not at midnight": [[with_props(bench_contact(1), date_of_birth="631065600001")]],
    "unknown property": [[with_props(bench_contact(1), description="x")]],
    "read-only property": [[with_props(bench_contact(1), hs_object_id="5"),
                            with_props(bench_contact(2), num_associated_deals="1")]],
    "string too long": [[with_props(bench_contact(1), city="x" * 65_537)]],
    "numbers and booleans as JSON types": [[with_props(bench_contact(1), total_revenue=5,
                                                       hs_email_optout=True)]],
    "null value": [[with_props(bench_contact(1), city=None)]],
    "no required property": [[{"properties": {"city": "x"}, "objectWriteTraceId": "a"},
                              bench_contact(2)]],
    "email taken": [[bench_contact(1)], [bench_contact(2), bench_contact(1)]],
    "email taken, other case": [
        [bench_contact(1, False)],
        [with_props(bench_contact(3, False), email="R-1@BENCH.example.com")],
    ],
    "email twice in the batch": [[bench_contact(1), bench_contact(1)]],
    "custom unique twice": [[with_props(bench_contact(1), member_code="A"),
                             with_props(bench_contact(2), member_code="a")]],
    "properties missing": [[bench_contact(1), {"objectWriteTraceId": "t"}]],
    "associations": [[{**bench_contact(1), "associations": [
        {"to": {"id": "999"}, "types": [{"associationCategory": "HUBSPOT_DEFINED",
                                         "associationTypeId": 279}]}]}]],
}


@pytest.mark.parametrize("batches", VALIDATED_DECLINED.values(), ids=VALIDATED_DECLINED.keys())
def test_batches_the_validated_fast_path_declines_get_the_per_input_answers(batches):
    FAST.clear()
    fast_out, each_out, fast_state, each_state = validated_both(batches)
    assert fast_out == each_out
    assert held(fast_state) == held(each_state)
    assert not FAST[-2], "the last batch should have gone input by input"


values = {
    "email": st.sampled_from(["a@x.io", "A@X.io", "b@x.io", "bad", "", "c@x.io\n", 7]),
    "firstname": st.sampled_from(["Ann", "", None, "x" * 3]),
    "lifecyclestage": st.sampled_from(["lead", "customer", "", "Lead", "nope"]),
    "hs_email_optout": st.sampled_from(["true", "false", "", "TRUE", False]),
    "date_of_birth": st.sampled_from(["1990-01-31", "1990-02-30", "631065600000", "1",
                                      "", "1990-01-31\n"]),
    "total_revenue": st.sampled_from(["1", " 2.5 ", "x", "", "1e3", 3.0]),
    "hs_buying_role": st.sampled_from(["CHAMPION", ";BLOCKER", "CHAMPION;NOPE", ";", ""]),
    "member_code": st.sampled_from(["m1", "M1", "m2", ""]),
    "hs_object_id": st.just("1"),
    "nosuch": st.just("x"),
}
validated_inputs = st.lists(
    st.fixed_dictionaries(
        {"properties": st.fixed_dictionaries({}, optional=values)},
        optional={"objectWriteTraceId": st.sampled_from(["t1", "t2"])},
    ),
    min_size=0, max_size=5,
)


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(validated_inputs, min_size=1, max_size=3))
def test_validated_fast_path_agrees_with_the_per_input_path_on_any_batch(batches):
    fast_out, each_out, fast_state, each_state = validated_both(batches)
    assert fast_out == each_out
    assert held(fast_state) == held(each_state)


def test_lean_records_written_by_the_fast_path_read_update_and_archive_like_any():
    """The fast path stores lean records whose property dict is made on first use: updates,
    upserts, reads and archives must see and keep their values as with any record."""
    state = fresh(True)
    store = state.portal.store("contacts")
    status, payload = objects.batch_create(store, {"inputs": [contact(n, True)
                                                              for n in range(3)]})
    assert status == 201 and isinstance(payload, bytes)
    ids = [r["id"] for r in orjson.loads(payload)["results"]]
    status, _ = objects.batch_update(store, {"inputs": [
        {"id": ids[0], "properties": {"email": "renamed@example.com"}}]})
    assert status == 200
    status, _ = objects.batch_upsert(store, {"inputs": [
        {"id": "p1@example.com", "idProperty": "email", "properties": {"member_code": "M-1"}}]})
    assert status == 200
    status, _ = objects.batch_archive(store, {"inputs": [{"id": ids[2]}]})
    assert status == 204
    dump = {r["id"]: r["properties"] for r in records_dump(state, "contacts")}
    assert dump == {ids[0]: {"email": "renamed@example.com"},
                    ids[1]: {"email": "p1@example.com", "member_code": "M-1"}}
    assert store.unique["email"] == {"renamed@example.com": int(ids[0]),
                                     "p1@example.com": int(ids[1])}
    status, read = objects.batch_read(store, {"idProperty": "email", "properties": ["email"],
                                              "inputs": [{"id": "RENAMED@example.com"}]},
                                      False)
    assert status == 200 and read["results"][0]["id"] == ids[0]
