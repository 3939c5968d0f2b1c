"""Reading inputs as text with row numbers, and refusing malformed CSV precisely."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine.errors import SourceError
from engine.source import SourceSpec, open_source

CASES = Path(__file__).parent / "cases"


def read_all(spec: SourceSpec) -> pl.DataFrame:
    return pl.concat(list(open_source(spec).batches()))


def test_csv_with_bom_crlf_quoted_newlines_and_blank_lines() -> None:
    source = open_source(SourceSpec(str(CASES / "crlf_bom_quoted.csv")))
    assert source.columns == ("Email", "First Name", "Zip")
    frame = pl.concat(list(source.batches()))
    assert_frame_equal(frame, pl.DataFrame({
        "source_row": [1, 3], "Email": ["a@x.io", "b@x.io"],
        "First Name": ["Ann\r\nMarie", "Bob, Jr"], "Zip": ["01234", None]}))
    assert (source.stats.rows_read, source.stats.blank_rows) == (2, 1)


def test_delimiter_is_configurable_and_values_stay_text() -> None:
    frame = read_all(SourceSpec(str(CASES / "semicolon.csv"), delimiter=";"))
    assert frame.row(0) == (1, "c@x.io", "Cy", "00042")


def test_batches_are_bounded_and_rows_continue_across_a_glob(tmp_path: Path) -> None:
    for name, start in (("b.csv", 100), ("a.csv", 0)):
        rows = "".join(f"{start + i},x{start + i}\n" for i in range(7))
        (tmp_path / name).write_text("id,name\n" + rows)
    source = open_source(SourceSpec(str(tmp_path / "*.csv"), chunk_rows=3))
    batches = list(source.batches())
    assert max(b.height for b in batches) <= 3
    frame = pl.concat(batches)
    assert frame["source_row"].to_list() == list(range(1, 15))
    assert frame["id"].to_list()[:8] == ["0", "1", "2", "3", "4", "5", "6", "100"]


def test_glob_with_different_headers_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,name\n1,x\n")
    (tmp_path / "b.csv").write_text("id,nom\n1,x\n")
    with pytest.raises(SourceError, match=r"b.csv: columns differ from a.csv"):
        open_source(SourceSpec(str(tmp_path / "*.csv")))


def test_parquet_and_ndjson_are_read_as_text(tmp_path: Path) -> None:
    frame = pl.DataFrame({"id": [1, 2], "zip": ["01234", None], "ok": [True, False]})
    frame.write_parquet(tmp_path / "x.parquet", row_group_size=1)
    got = read_all(SourceSpec(str(tmp_path / "x.parquet"), chunk_rows=1))
    assert got.rows() == [(1, "1", "01234", "true"), (2, "2", None, "false")]
    (tmp_path / "x.ndjson").write_text(
        "\n".join(json.dumps(r) for r in ({"id": 1, "zip": "01234"}, {"id": 2})) + "\n")
    got = read_all(SourceSpec(str(tmp_path / "x.ndjson")))
    assert got.rows() == [(1, "1", "01234"), (2, "2", None)]


def test_fingerprint_changes_with_the_content(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("id\n1\n")
    before = open_source(SourceSpec(str(path))).fingerprint()
    assert open_source(SourceSpec(str(path))).fingerprint() == before
    path.write_text("id\n2\n")
    os.utime(path, ns=(before.files[0].mtime_ns, before.files[0].mtime_ns))
    after = open_source(SourceSpec(str(path))).fingerprint()
    assert after.digest != before.digest


LONG = b"x" * 65_537


@pytest.mark.parametrize(("name", "data", "message"), [
    ("ragged extra", b"id,name,zip\n1,a,b\n2,b,c,d\n",
     "row 2, byte 24: row has 4 fields but the header has 3 (extra field)"),
    ("ragged missing", b'id,name,zip\n1,a,b\n2,"b,c"\n',
     "row 2, column 'zip', byte 18: row has 2 fields but the header has 3 (missing 'zip')"),
    ("ragged missing crlf", b"id,name,zip\r\n1,a,b\r\n2,b\r\n",
     "row 2, column 'zip', byte 20: row has 2 fields but the header has 3 (missing 'zip')"),
    ("invalid utf-8", b"id,name,zip\n1,a,b\n2,caf\xe9,c\n",
     "row 2, column 'name', byte 23: invalid UTF-8 (set encoding_errors to replace to "
     "substitute U+FFFD)"),
    ("unterminated quote", b'id,name,zip\n1,a,b\n2,"abc,c\n3,d,e\n',
     "row 2, column 'name', byte 20: unterminated quoted field: the quote opened here is "
     "never closed"),
    ("duplicate header", b"id,name,id\n1,2,3\n",
     "column 'id', byte 8: header: duplicate column name (columns 1 and 3)"),
    ("empty header", b"id,,zip\n1,2,3\n", "byte 3: header: column 2 has an empty name"),
    ("field too long", b'id,name,zip\n1,a,b\n2,"' + LONG + b'",c\n',
     "row 2, column 'name', byte 20: field is longer than 65536 characters (65537 here)"),
])
def test_malformed_csv_is_refused_with_where_and_why(tmp_path: Path, name: str, data: bytes,
                                                     message: str) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    with pytest.raises(SourceError) as caught:
        list(open_source(SourceSpec(str(path))).batches())
    assert str(caught.value) == f"{path}, {message}"


def test_invalid_utf8_can_be_replaced(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"id,name\n1,caf\xe9\n")
    frame = read_all(SourceSpec(str(path), encoding_errors="replace"))
    assert frame["name"].to_list() == ["caf\ufffd"]


def test_a_field_of_exactly_the_limit_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"id,name\n1," + b"x" * 65_536 + b"\n")
    assert read_all(SourceSpec(str(path)))["name"].str.len_chars().to_list() == [65_536]


def test_missing_file_and_unknown_type(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        open_source(SourceSpec(str(tmp_path / "nope.csv")))
    (tmp_path / "x.xlsx").write_text("x")
    with pytest.raises(SourceError, match="unknown file type"):
        open_source(SourceSpec(str(tmp_path / "x.xlsx")))


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_batches_of_some_columns_keep_source_rows(tmp_path: Path, suffix: str) -> None:
    frame = pl.DataFrame({"a": ["1", None, "3", "4"], "b": ["x", "y", None, "w"],
                          "c": ["p", "q", "r", "s"]})
    path = tmp_path / f"in.{suffix}"
    frame.write_csv(path) if suffix == "csv" else frame.write_parquet(path)
    source = open_source(SourceSpec(str(path)))
    got = pl.concat(source.batches(columns=["b"]))
    assert got.columns == ["source_row", "b"]
    assert got.rows() == [(1, "x"), (2, "y"), (4, "w")]  # row 3 is blank in `b`
    with pytest.raises(SourceError, match="no such column: z"):
        next(source.batches(columns=["z"]))


def test_the_strict_check_runs_once_per_content(tmp_path: Path, monkeypatch) -> None:
    import engine.source as module

    scans: list[Path] = []
    real_run = module._CsvScan.run

    def counting_run(self: module._CsvScan) -> None:
        scans.append(self.path)
        real_run(self)

    monkeypatch.setattr(module._CsvScan, "run", counting_run)
    path = tmp_path / "in.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    source = open_source(SourceSpec(str(path)))
    assert len(pl.concat(source.batches())) == 2
    assert len(pl.concat(source.batches())) == 2
    assert len(scans) == 1
    path.write_text("a,b\n1,2\n3,4,5\n")  # changed, and now ragged: checked again
    with pytest.raises(SourceError, match="row 2"):
        next(source.batches())
    assert len(scans) == 2


def test_a_nul_byte_is_kept_for_normalisation_and_does_not_upset_the_check(
        tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b'id,name,zip\n1,"a\x00""b",x\n2,\x00,"y\x00"\n3,c,z\n')
    frame = read_all(SourceSpec(str(path)))
    assert frame.rows() == [(1, "1", 'a\x00"b', "x"), (2, "2", "\x00", "y\x00"),
                            (3, "3", "c", "z")]


def test_a_cr_only_file_with_a_lf_further_on_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    head = b"a,b\r" + b"1,2\r" * 300_000   # more than the first MB, all CR
    path.write_bytes(head + b"3,4\n")
    with pytest.raises(SourceError) as caught:
        next(open_source(SourceSpec(str(path))).batches())
    assert str(caught.value) == (
        f"{path}, byte {len(head) + 3}: the file ends lines with CR alone (old Mac style) "
        "but has a LF here: convert its line ends to LF or CRLF")


def test_ndjson_values_are_text_as_written(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    path.write_bytes(b'{"id": 1, "n": 2}\n\n  \n'
                     b'{"id": 2, "n": 1.50, "ok": true, "tags": ["a", "b"]}\r\n'
                     b'{"n": 123456789012345678901234567890, "id": 3, "o": {"k": null}}\n'
                     b'{"id": 4, "n": 0.1000000000000000055511151231257827, "ok": false}\n'
                     b'{"id": 5, "s": "x\\u00e9\\u0000"}')
    source = open_source(SourceSpec(str(path)))
    assert source.columns == ("id", "n", "ok", "tags", "o", "s")
    got = pl.concat(source.batches())
    assert got.rows() == [
        (1, "1", "2", None, None, None, None),
        (2, "2", "1.50", "true", '["a","b"]', None, None),
        (3, "3", "123456789012345678901234567890", None, None, '{"k":null}', None),
        (4, "4", "0.1000000000000000055511151231257827", "false", None, None, None),
        (5, "5", None, None, None, None, "x\u00e9\x00"),
    ]


@pytest.mark.parametrize(("line", "offset"), [
    (b'{"id": 3', 26), (b'{"id": 3}{"id": 4}', 26), (b"[3]", 26), (b"null", 26),
    (b'{"id": "\\ud800"}', 26)])
def test_a_line_that_is_not_one_json_object_refuses_the_file_on_open(
        tmp_path: Path, line: bytes, offset: int) -> None:
    path = tmp_path / "in.ndjson"
    path.write_bytes(b'{"id": 1}\n\n{"id": 222222}\n' + line + b'\n{"id": 5}\n')
    with pytest.raises(SourceError, match=rf"in.ndjson, row 3, byte {offset}: line is not "
                                          r"one JSON object"):
        open_source(SourceSpec(str(path)))


def test_a_source_reads_the_bytes_it_fingerprinted(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"a,b\n1,2\n3,4\n")
    source = open_source(SourceSpec(str(path)))
    with path.open("ab") as f:
        f.write(b"5,6\n7,8,9")  # appended after the fingerprint: a later run reads it
    assert pl.concat(source.batches())["a"].to_list() == ["1", "3"]
    source.fingerprint()
    with pytest.raises(SourceError, match="row 4"):
        next(source.batches())


def test_a_file_rewritten_with_other_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    path.write_bytes(b'{"a": 1}\n')
    source = open_source(SourceSpec(str(path)))
    path.write_bytes(b'{"b": 1}\n{"b": 2}\n')
    with pytest.raises(SourceError, match="the columns changed since the input was opened"):
        next(source.batches())
