import orjson

from engine.importer import _fast_results


def answer(results, **extra):
    return orjson.dumps({"status": "COMPLETE", "results": results, **extra})


def test_a_clean_answer_is_read_without_a_full_decode():
    body = answer([{"id": "11", "properties": {"hs_object_id": "11", "note": 'x","id":"99'},
                    "objectWriteTraceId": "2"},
                   {"id": "10", "properties": {"id_like": "1"}, "objectWriteTraceId": "1"}])
    assert _fast_results(body, [1, 2], "create") == [(2, "11", "created"), (1, "10", "created")]


def test_upsert_flags_are_read():
    body = answer([{"id": "5", "new": False, "objectWriteTraceId": "1"},
                   {"id": "6", "new": True, "objectWriteTraceId": "2"}])
    assert _fast_results(body, [1, 2], "upsert") == [(1, "5", "updated"), (2, "6", "created")]


def test_anything_unusual_falls_back_to_the_full_decoder():
    two = [{"id": "5", "objectWriteTraceId": "1"}, {"id": "6", "objectWriteTraceId": "2"}]
    assert _fast_results(answer(two, errors=[]), [1, 2], "create") is None
    assert _fast_results(answer(two[:1]), [1, 2], "create") is None
    assert _fast_results(answer(two), [1, 3], "create") is None
    assert _fast_results(answer([{"id": "5"}, {"id": "6"}]), [1, 2], "create") is None
    nested = [{"id": "5", "properties": {"x": {"id": "7"}}, "objectWriteTraceId": "1"}]
    assert _fast_results(answer(nested), [1], "create") is None
