import orjson
import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from engine.batch import INPUT, KEY, Batcher, clean_columns, encode_body, input_expr
from engine.source import SOURCE_ROW as ROW


def encode(frame: pl.DataFrame, **kwargs) -> list[dict]:
    out = frame.select(input_expr(**kwargs))
    return [orjson.loads(s) for s in out[INPUT]]


def test_inputs_omit_nulls_and_escape_values():
    frame = pl.DataFrame({ROW: [1, 2], "email": ['a"b\\c@x.com', None],
                          "firstname": ["Ann\n", "Bo"]})
    assert encode(frame, properties=["email", "firstname"]) == [
        {"properties": {"email": 'a"b\\c@x.com', "firstname": "Ann\n"},
         "objectWriteTraceId": "1"},
        {"properties": {"firstname": "Bo"}, "objectWriteTraceId": "2"},
    ]


def test_upsert_inputs_carry_id_and_id_property():
    frame = pl.DataFrame({ROW: [7], "email": ["a@x.com"], "firstname": [None]},
                         schema={ROW: pl.Int64, "email": pl.String, "firstname": pl.String})
    assert encode(frame, properties=["email", "firstname"], id_column="email",
                  id_property="email") == [
        {"id": "a@x.com", "idProperty": "email", "properties": {"email": "a@x.com"},
         "objectWriteTraceId": "7"}]


def test_inline_associations_ride_along():
    frame = pl.DataFrame({ROW: [1, 2], "dealname": ["x", "y"],
                          "assoc": ['[{"to":{"id":"5"},"types":[]}]', None]})
    got = encode(frame, properties=["dealname"], associations_column="assoc")
    assert got[0]["associations"] == [{"to": {"id": "5"}, "types": []}]
    assert "associations" not in got[1]


@given(st.lists(st.integers(min_value=1, max_value=450), min_size=1, max_size=20))
def test_batches_do_not_depend_on_chunk_sizes(chunks):
    total = sum(chunks)
    frame = pl.DataFrame({ROW: list(range(1, total + 1)),
                          INPUT: [f'{{"n":{i}}}' for i in range(total)]})
    one = Batcher(100)
    whole = list(one.feed(frame)) + list(one.flush())
    batcher = Batcher(100)
    pieces = []
    offset = 0
    for size in chunks:
        pieces += list(batcher.feed(frame.slice(offset, size)))
        offset += size
    pieces += list(batcher.flush())
    assert [(b.seq, b.rows) for b in pieces] == [(b.seq, b.rows) for b in whole]
    assert sum(len(b.rows) for b in pieces) == total  # every row lands in exactly one batch
    assert all(len(b.rows) <= 100 for b in pieces)


def test_a_repeated_key_closes_the_batch():
    frame = pl.DataFrame({ROW: [1, 2, 3, 4], INPUT: ["{}"] * 4, KEY: ["a", "b", "a", "c"]})
    batcher = Batcher(100)
    batches = list(batcher.feed(frame)) + list(batcher.flush())
    assert [b.keys for b in batches] == [["a", "b"], ["a", "c"]]
    assert orjson.loads(encode_body(batches[0].inputs)) == {"inputs": [{}, {}]}


def test_a_key_repeated_across_chunks_closes_the_open_batch():
    batcher = Batcher(100)
    first = pl.DataFrame({ROW: [1, 2], INPUT: ["{}"] * 2, KEY: ["a@x.com", "b@x.com"]})
    second = pl.DataFrame({ROW: [3, 4], INPUT: ["{}"] * 2, KEY: ["A@X.com", "c@x.com"]})
    batches = [*batcher.feed(first), *batcher.feed(second), *batcher.flush()]
    assert [b.rows for b in batches] == [[1, 2], [3, 4]]


@given(st.lists(st.one_of(st.none(), st.text(max_size=12)), min_size=1, max_size=30))
def test_unescaped_fast_path_encodes_exactly_like_json(values):
    frame = pl.DataFrame({ROW: list(range(1, len(values) + 1)), "note": values},
                         schema={ROW: pl.Int64, "note": pl.String})
    clean = clean_columns(frame, ["note"])
    got = encode(frame, properties=["note"], clean=clean)
    want = [{"properties": {} if v is None else {"note": v}, "objectWriteTraceId": str(i + 1)}
            for i, v in enumerate(values)]
    assert got == want
