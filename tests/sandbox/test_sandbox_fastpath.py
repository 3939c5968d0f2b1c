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

from engine.sandbox import objects
from engine.sandbox.errors import ApiError
from engine.sandbox.properties import create_property
from engine.sandbox.server import State, audit_report, records_dump
from engine.sandbox.settings import SandboxSettings

FIXED_MS = 1_700_000_000_123


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both paths stamp the same times, so answers compare whole."""
    monkeypatch.setattr(objects, "now_ms", lambda: FIXED_MS)


def fresh(lean: bool) -> State:
    state = State(SandboxSettings(rate_requests=None, search_rate_per_s=None, lean=lean))
    contacts = state.portal.store("contacts")
    create_property(contacts, {"name": "member_code", "label": "Member code", "type": "string",
                               "fieldType": "text", "groupName": "contactinformation",
                               "hasUniqueValue": True})
    return state


def outcome(call: Any) -> tuple[int, Any]:
    """(status, decoded body) of an Answer or an ApiError, correlation ids dropped."""
    try:
        status, payload = call()
    except ApiError as exc:
        status, payload = exc.status, exc.body
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


def lean_both(batches: list[list[Any]]) -> tuple[list[tuple[int, Any]], list[tuple[int, Any]],
                                                  State, State]:
    """Send the batches through batch_create (fast path first) and through the per-input lean
    path on two fresh lean sandboxes."""
    fast_state, each_state = fresh(True), fresh(True)
    fast_store, each_store = (s.portal.store("contacts") for s in (fast_state, each_state))
    fast_out, each_out = [], []
    for inputs in batches:
        body = {"inputs": inputs}
        traced = objects.is_traced(inputs)
        fast_out.append(outcome(lambda b=body: objects.batch_create(fast_store, b)))
        each_out.append(outcome(
            lambda i=inputs, t=traced: objects.lean_create_each(each_store, i, t, FIXED_MS)
        ))
    return fast_out, each_out, fast_state, each_state


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
}


@pytest.mark.parametrize("batches", LEAN_CASES.values(), ids=LEAN_CASES.keys())
def test_lean_fast_path_answers_and_stores_what_the_per_input_path_does(batches):
    fast_out, each_out, fast_state, each_state = lean_both(batches)
    assert [status for status, _ in fast_out] == [201] * len(batches)
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
    "properties not an object": [[contact(1, True),
                                  {"properties": ["x"], "objectWriteTraceId": "t"}]],
    "input not an object": [[contact(1, False), "nope"]],
}


@pytest.mark.parametrize("batches", DECLINED.values(), ids=DECLINED.keys())
def test_batches_the_lean_fast_path_declines_get_the_per_input_answers(batches):
    fast_out, each_out, fast_state, each_state = lean_both(batches)
    assert fast_out == each_out
    assert held(fast_state) == held(each_state)


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
@given(batches=st.lists(inputs_strategy, min_size=1, max_size=3))
def test_lean_fast_path_agrees_with_the_per_input_path_on_any_batch(batches):
    fast_out, each_out, fast_state, each_state = lean_both(batches)
    assert fast_out == each_out
    assert held(fast_state) == held(each_state)
