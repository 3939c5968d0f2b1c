"""The results file as the journal makes it (`iter_keyed_results` -> `results_frame`).

Each batch's rows sorted by source row, each with the key its batch was journaled with,
for every shape a batch can have in the journal: answered whole and in order (the usual
one), out of order, a subset of its rows, journaled without keys, keys that JSON escapes,
none answered. And the usual case stays cheap: the results file of a large journal costs
about what decoding the journal's JSON in Python alone does.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from engine.journal import Result, SqliteCheckpoint, Transition
from engine.report import results_frame

SCHEMA = {"source_row": pl.Int64, "email": pl.String, "id": pl.String, "action": pl.String}

# (journaled rows, journaled keys or None, answered (row, id, action) in answer order)
Batch = tuple[list[int], list[str] | None, list[tuple[int, str, str]]]

SHAPES: list[Batch] = [
    # answered whole, in order
    ([1, 2, 3], ["a@x.com", "b@x.com", "c@x.com"],
     [(1, "101", "created"), (2, "102", "updated"), (3, "103", "unchanged")]),
    # answered out of order
    ([4, 5, 6], ["d@x.com", "e@x.com", "f@x.com"],
     [(6, "106", "created"), (4, "104", "created"), (5, "105", "updated")]),
    # a subset of its rows (row 8 rejected)
    ([7, 8, 9], ["g@x.com", "h@x.com", "i@x.com"], [(7, "107", "created"), (9, "109", "updated")]),
    # journaled without keys
    ([10, 11], None, [(10, "110", "updated"), (11, "111", "updated")]),
    # keys JSON escapes
    ([12, 13, 14], ['say "hi"@x.com', "back\\slash@x.com", "tab\there@x.com"],
     [(12, "112", "created"), (13, "113", "created"), (14, "114", "created")]),
    # keys that look like JSON without being escaped, and one empty
    ([15, 16, 17, 18], ["é,ü@x.com", "],[", "null", ""],
     [(15, "115", "created"), (16, "116", "created"), (17, "117", "created"),
      (18, "118", "created")]),
    # journaled and answered whole in descending order
    ([21, 20, 19], ["z@x.com", "y@x.com", "x@x.com"],
     [(21, "121", "created"), (20, "120", "created"), (19, "119", "created")]),
    # none answered (all rejected)
    ([22], ["r@x.com"], []),
    # one row
    ([23], ["s@x.com"], [(23, "123", "unchanged")]),
]

EXPECTED = pl.DataFrame(
    [(1, "a@x.com", "101", "created"), (2, "b@x.com", "102", "updated"),
     (3, "c@x.com", "103", "unchanged"),
     (4, "d@x.com", "104", "created"), (5, "e@x.com", "105", "updated"),
     (6, "f@x.com", "106", "created"),
     (7, "g@x.com", "107", "created"), (9, "i@x.com", "109", "updated"),
     (10, None, "110", "updated"), (11, None, "111", "updated"),
     (12, 'say "hi"@x.com', "112", "created"), (13, "back\\slash@x.com", "113", "created"),
     (14, "tab\there@x.com", "114", "created"),
     (15, "é,ü@x.com", "115", "created"), (16, "],[", "116", "created"),
     (17, "null", "117", "created"), (18, "", "118", "created"),
     (19, "x@x.com", "119", "created"), (20, "y@x.com", "120", "created"),
     (21, "z@x.com", "121", "created"),
     (23, "s@x.com", "123", "unchanged")],
    schema=SCHEMA, orient="row")


def journal(path: Path, batches: Sequence[Batch], step: str = "s") -> SqliteCheckpoint:
    """A journal holding `batches` DONE in order, and one more still in flight."""
    cp = SqliteCheckpoint(path)
    ops = []
    for seq, (rows, keys, answered) in enumerate(batches):
        ops.append(Transition.begin(step, seq, rows, keys))
        ops.append(Transition.finish(step, seq, results=[Result(*r) for r in answered]))
    ops.append(Transition.begin(step, len(batches), [99], ["in-flight@x.com"]))
    cp.apply(ops)
    return cp


def reference(batches: Sequence[Batch]) -> pl.DataFrame:
    """What the results file holds, by the plainest reading of the journal."""
    out: list[tuple[int, str | None, str, str]] = []
    for rows, keys, answered in batches:
        key_of = dict(zip(rows, keys, strict=True)) if keys is not None else {}
        out += sorted((row, key_of.get(row), rid, action) for row, rid, action in answered)
    return pl.DataFrame(out, schema=SCHEMA, orient="row")


def test_every_batch_shape_is_read_back_sorted_with_its_keys(tmp_path):
    cp = journal(tmp_path / "j.db", SHAPES)
    try:
        for chunk in (50_000, 1, 4):  # one chunk, a batch a chunk, chunks that mix shapes
            written = results_frame(cp.iter_keyed_results("s", chunk), "email")
            assert_frame_equal(written, EXPECTED)
        assert_frame_equal(results_frame(cp.iter_keyed_results("other"), "email"),
                           EXPECTED.clear())
    finally:
        cp.close()
    assert_frame_equal(reference(SHAPES), EXPECTED)


def test_a_key_property_named_like_a_results_column_becomes_key(tmp_path):
    cp = journal(tmp_path / "j.db", SHAPES[:1])
    try:
        written = results_frame(cp.iter_keyed_results("s"), "id")
    finally:
        cp.close()
    assert written.columns == ["source_row", "key", "id", "action"]
    assert written.get_column("key").to_list() == ["a@x.com", "b@x.com", "c@x.com"]


keys_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)


@st.composite
def batches(draw: st.DrawFn) -> list[Batch]:
    """Batches of distinct rows in any order, any keys (null ones too, or none); each
    answered for any subset of its rows, in any order."""
    out: list[Batch] = []
    next_row = 1
    for _ in range(draw(st.integers(1, 6))):
        size = draw(st.integers(1, 5))
        rows = draw(st.permutations(list(range(next_row, next_row + size))))
        next_row += size
        keys = draw(st.none() | st.lists(st.none() | keys_text, min_size=size, max_size=size))
        answered = draw(st.lists(st.sampled_from(rows), unique=True)) if draw(
            st.booleans()) else list(rows)
        actions = st.sampled_from(["created", "updated", "unchanged"])
        out.append((rows, keys, [(row, draw(keys_text), draw(actions)) for row in answered]))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), st.sampled_from([1, 3, 50_000]))
def test_any_journal_reads_back_as_its_plainest_reading(journaled, chunk):
    with tempfile.TemporaryDirectory() as folder:
        cp = journal(Path(folder) / "j.db", journaled)
        try:
            written = results_frame(cp.iter_keyed_results("s", chunk), "email")
        finally:
            cp.close()
    assert_frame_equal(written, reference(journaled))


