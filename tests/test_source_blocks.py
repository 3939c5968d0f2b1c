"""CSV read in blocks cut at record ends gives exactly what one polars scan of the file gives.

The block size only bounds memory: these tests shrink it to a few bytes so that blocks cut
through every kind of record (quoted line breaks, doubled quotes, CRLF, a BOM, blank lines,
multi-byte characters, fields longer than a block, no final line break).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from engine import source as source_module
from engine.errors import SourceError
from engine.source import SourceSpec, open_source
from tests.test_source import CASES

BLOCK_SIZES = [1, 3, 7, 64, 4 << 20]
TRICKY = (
    b'id,name,note\r\n1,"Ann\r\nMarie","say ""hi"""\r\n\r\n2,Bob,"a,b"\r\n'
    b',,\r\n3,"\xc3\xa9t\xc3\xa9 \xe2\x82\xac",' + b"y" * 50 + b'\r\n4,"' + b"\n" * 9 + b'",z'
)


def scan_reference(path: Path, chunk_rows: int) -> list[pl.DataFrame]:
    """What one polars scan of the file yields, numbered, blank rows dropped, re-batched."""
    frame = (pl.scan_csv(path, infer_schema=False, raise_if_empty=False)
             .with_row_index("source_row", offset=1).collect()
             .with_columns(pl.col("source_row").cast(pl.Int64)))
    data = [c for c in frame.columns if c != "source_row"]
    batches = [frame.slice(i, chunk_rows) for i in range(0, frame.height, chunk_rows)]
    return [b.filter(~pl.all_horizontal(pl.col(c).is_null() for c in data)) for b in batches]


def read_batches(path: Path, chunk_rows: int) -> list[pl.DataFrame]:
    return list(open_source(SourceSpec(str(path), chunk_rows=chunk_rows)).batches())


def assert_same(got: list[pl.DataFrame], want: list[pl.DataFrame]) -> None:
    want = [b for b in want if b.height]
    assert [b.height for b in got] == [b.height for b in want]
    for a, b in zip(got, want, strict=True):
        assert_frame_equal(a, b)


@pytest.mark.parametrize("block", BLOCK_SIZES)
@pytest.mark.parametrize("chunk_rows", [1, 2, 50_000])
def test_blocks_give_the_scan_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     block: int, chunk_rows: int) -> None:
    monkeypatch.setattr(source_module, "_BLOCK_BYTES", block)
    for data in (TRICKY, TRICKY + b"\r\n", (CASES / "crlf_bom_quoted.csv").read_bytes(),
                 (CASES / "contacts_small.csv").read_bytes(), b"id,name\n",
                 b"id,name\n1,\"" + b"x\n" * 100 + b"\"\n2,b"):
        path = tmp_path / "in.csv"
        path.write_bytes(data)
        assert_same(read_batches(path, chunk_rows), scan_reference(path, chunk_rows))


@pytest.mark.parametrize("block", [1, 5, 64])
def test_malformed_files_are_refused_the_same_way_with_small_blocks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    from tests.test_source import test_malformed_csv_is_refused_with_where_and_why as check

    monkeypatch.setattr(source_module, "_BLOCK_BYTES", block)
    marks = check.pytestmark  # type: ignore[attr-defined]
    cases = next(m.args[1] for m in marks if m.name == "parametrize")
    for name, data, message in cases:
        folder = tmp_path / name.replace(" ", "_")
        folder.mkdir()
        check(folder, name, data, message)


def test_rows_continue_across_files_read_in_blocks(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source_module, "_BLOCK_BYTES", 3)
    (tmp_path / "a.csv").write_bytes(b'id,v\n1,"x\ny"\n\n2,z\n')
    (tmp_path / "b.csv").write_bytes(b"id,v\n3,w\n4,\"q\"\"\"")
    source = open_source(SourceSpec(str(tmp_path / "*.csv"), chunk_rows=2))
    frame = pl.concat(list(source.batches()))
    assert frame.rows() == [(1, "1", "x\ny"), (3, "2", "z"), (4, "3", "w"), (5, "4", 'q"')]
    assert (source.stats.rows_read, source.stats.blank_rows) == (4, 1)


def test_unreadable_block_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"id,name\n1,caf\xe9\n")
    with pytest.raises(SourceError, match="cannot read the file"):
        list(open_source(SourceSpec(str(path))).batches(check=False))


_FIELD = st.text(alphabet=st.sampled_from(list('ab,"\n\r é€;')), max_size=8)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(_FIELD, _FIELD), max_size=25),
       block=st.integers(min_value=1, max_value=40),
       chunk_rows=st.integers(min_value=1, max_value=7),
       crlf=st.booleans())
def test_any_csv_reads_the_same_in_any_block_size(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  rows: list[tuple[str, str]], block: int,
                                                  chunk_rows: int, crlf: bool) -> None:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n" if crlf else "\n").writerows([("k", "v"), *rows])
    path = tmp_path / "in.csv"
    path.write_bytes(out.getvalue().encode())
    monkeypatch.setattr(source_module, "_BLOCK_BYTES", block)
    assert_same(read_batches(path, chunk_rows), scan_reference(path, chunk_rows))


LF_ONLY = (b'id,name,note\n1,"Ann\nMarie","say ""hi"""\n\n2,Bob,"a,b"\n,,\n'
           b'3,"\xc3\xa9t\xc3\xa9 \xe2\x82\xac",' + b"y" * 50 + b'\n4,"' + b"\n" * 9 + b'",z')


@pytest.mark.parametrize("block", BLOCK_SIZES)
def test_cr_line_ends_read_like_lf_line_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             block: int) -> None:
    monkeypatch.setattr(source_module, "_BLOCK_BYTES", block)
    for data in (LF_ONLY, LF_ONLY + b"\n"):
        (tmp_path / "lf.csv").write_bytes(data)
        (tmp_path / "cr.csv").write_bytes(data.replace(b"\n", b"\r"))
        want = read_batches(tmp_path / "lf.csv", 2)
        got = [b.with_columns(pl.col(pl.String).str.replace_all("\r", "\n"))
               for b in read_batches(tmp_path / "cr.csv", 2)]
        assert_same(got, want)


@pytest.mark.parametrize("block", [1, 7, 64, 4 << 20])
def test_ndjson_reads_the_same_in_any_block_size(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 block: int) -> None:
    path = tmp_path / "in.ndjson"
    path.write_bytes(b'{"k": "a", "v": 1}\n\n{"v": 12345678901234567.5}\n{"k": "\\n"}\r\n'
                     b'{"k": "c", "v": [1]}')
    want = [(1, "a", "1"), (2, None, "12345678901234567.5"), (3, "\n", None),
            (4, "c", "[1]")]
    monkeypatch.setattr(source_module, "_BLOCK_BYTES", block)
    source = open_source(SourceSpec(str(path), chunk_rows=2))
    assert [len(b) for b in source.batches()] == [2, 2]
    assert pl.concat(source.batches()).rows() == want
