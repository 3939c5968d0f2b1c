"""Hostile input files, imported through the CLI: never silently wrong data, never a stop
half-way. Each case asserts the exit code, what the sandbox stored and the files written."""

from __future__ import annotations

import datetime as dt
import decimal
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import polars as pl
import pytest

import engine.source as source_module
from engine.cli import main

UPSERT = ["--object", "contacts", "--mode", "upsert", "--id-property", "email"]


def run(tmp_path: Path, sandbox, source: Path, *extra: str) -> int:
    return main(["import", str(source), "--base-url", sandbox.base_url, "--rate", "none",
                 "--checkpoint", str(tmp_path / "cp" / "job.db"),
                 "--summary", str(tmp_path / "summary.json"),
                 "--rejects", str(tmp_path / "rejects.csv"), "--quiet", *UPSERT, *extra])


def stored(sandbox) -> dict[str, dict[str, str]]:
    return {r["properties"]["email"]: r["properties"] for r in sandbox.records("contacts")}


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("hsbulk: error: ") and "\n" not in err and "Traceback" not in err
    return err


def csv_rows(n: int, start: int = 1) -> bytes:
    return b"".join(f"u{i}@x.io,First{i}\n".encode() for i in range(start, start + n))


# --- Parquet types ----------------------------------------------------------------------


def test_parquet_typed_columns_are_stored_as_the_values_they_hold(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    path = tmp_path / "in.parquet"
    pl.DataFrame({
        "email": ["a@x.io", "b@x.io"],
        "seen": pl.Series([dt.datetime(2024, 3, 5, 12), dt.datetime(2024, 7, 1, 23, 30)])
        .dt.replace_time_zone("America/New_York"),
        "birth": [dt.date(1990, 2, 1), None],
        "revenue": pl.Series([decimal.Decimal("1234.50"), decimal.Decimal("-0.25")],
                             dtype=pl.Decimal(10, 2)),
        "optout": [True, False],
        "tags": [["x", "y, z"], []],
        "at": [dt.time(1, 2, 3, 456789), dt.time(12)],
        "took": [dt.timedelta(hours=1, minutes=30), None],
    }).write_parquet(path)
    code = run(tmp_path, sandbox, path, "--map", "seen=hs_last_sales_activity_timestamp",
               "--map", "birth=date_of_birth", "--map", "revenue=total_revenue",
               "--map", "optout=hs_email_optout", "--map", "tags=message",
               "--map", "at=jobtitle", "--map", "took=city")
    assert code == 0
    got = stored(sandbox)
    a, b = got["a@x.io"], got["b@x.io"]
    # 12:00 in New York (EST) is 17:00 UTC; 23:30 in July (EDT) is 03:30 UTC the next day.
    assert a["hs_last_sales_activity_timestamp"] == "2024-03-05T17:00:00.000Z"
    assert b["hs_last_sales_activity_timestamp"] == "2024-07-02T03:30:00.000Z"
    assert (a["date_of_birth"], a["total_revenue"], b["total_revenue"]) == (
        "1990-02-01", "1234.5", "-0.25")
    assert (a["hs_email_optout"], b["hs_email_optout"]) == ("true", "false")
    assert (a["message"], b["message"]) == ('["x","y, z"]', "[]")
    assert (a["jobtitle"], b["jobtitle"]) == ("01:02:03.456789", "12:00:00")
    assert a["city"] == "PT1H30M"


def test_naive_parquet_datetimes_are_read_in_the_timezone_option(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    path = tmp_path / "in.parquet"
    pl.DataFrame({"email": ["a@x.io"], "seen": [dt.datetime(2024, 7, 1, 9, 30, 0, 250000)]}
                 ).write_parquet(path)
    code = run(tmp_path, sandbox, path, "--map", "seen=hs_last_sales_activity_timestamp",
               "--timezone", "Europe/Paris")
    assert code == 0
    assert stored(sandbox)["a@x.io"]["hs_last_sales_activity_timestamp"] == (
        "2024-07-01T07:30:00.250Z")


# --- CSV line ends and NUL bytes ----------------------------------------------------------


def test_a_csv_with_cr_line_ends_imports_every_row(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    path = tmp_path / "mac.csv"
    path.write_bytes(b'email,firstname\ra@x.io,Ann\rb@x.io,"Bob, Jr"\r\rc@x.io,Cy\r')
    assert run(tmp_path, sandbox, path) == 0
    assert {k: v["firstname"] for k, v in stored(sandbox).items()} == {
        "a@x.io": "Ann", "b@x.io": "Bob, Jr", "c@x.io": "Cy"}
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert (summary["rows_read"], summary["created"]) == (3, 3)


def test_a_nul_in_a_field_rejects_that_row_by_row_and_column(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    path = tmp_path / "in.csv"
    path.write_bytes(b'email,firstname,lastname\n'
                     b'a@x.io,Ann,A\n'
                     b'b@x.io,B\x00b,B\n'
                     b'c@x.io,Cy,C\n'
                     b'"d@x\x00.io",Di,"D\x00"\n')
    assert run(tmp_path, sandbox, path) == 1
    assert sorted(stored(sandbox)) == ["a@x.io", "c@x.io"]
    assert not any("\x00" in v for r in stored(sandbox).values() for v in r.values() if v)
    rejects = pl.read_csv(tmp_path / "rejects.csv", infer_schema=False)
    got = sorted(zip(rejects["hsbulk_source_row"], rejects["hsbulk_column"],
                     rejects["hsbulk_code"], strict=True))
    assert ("2", "firstname", "INVALID_CHARACTER") in got
    assert ("4", "email", "INVALID_CHARACTER") in got
    assert ("4", "lastname", "INVALID_CHARACTER") in got
    assert set(rejects["hsbulk_source_row"]) == {"2", "4"}


def test_a_ragged_row_after_a_nul_is_refused_before_any_write(tmp_path, sandbox_env, capsys):
    sandbox = sandbox_env(rate_requests=None)
    path = tmp_path / "in.csv"
    # The old pre-scan split lines at NUL: the quote after each NUL went uncounted, so the
    # rows between them looked quoted and the ragged row passed the check.
    path.write_bytes(b"email,firstname\n" + csv_rows(4) + b'u5@x.io,"Fi\x00ve"\n'
                     + csv_rows(1000, 6) + b"bad@x.io,Bad,extra\n" + csv_rows(1000, 1007)
                     + b'u2007@x.io,"Tw\x00o"\n' + csv_rows(5, 2008))
    assert run(tmp_path, sandbox, path) == 2
    err = one_line_error(capsys)
    assert f"{path}, row 1006" in err and "extra field" in err
    assert stored(sandbox) == {}


# --- NDJSON -----------------------------------------------------------------------------


def ndjson(rows: list[dict[str, object]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def test_ndjson_values_are_read_as_written_whatever_came_first(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    path = tmp_path / "in.ndjson"
    rows: list[dict[str, object]] = [{"email": f"u{i}@x.io", "revenue": i} for i in range(1200)]
    rows.append({"email": "drift@x.io", "revenue": 1.5, "zip": "01234"})
    text = ndjson(rows) + b'{"email": "exact@x.io", "revenue": 12345678901234567.25}\n'
    path.write_bytes(text)
    assert run(tmp_path, sandbox, path, "--map", "revenue=total_revenue") == 0
    got = stored(sandbox)
    assert len(got) == 1202
    assert got["u7@x.io"]["total_revenue"] == "7"
    assert got["drift@x.io"]["total_revenue"] == "1.5"
    assert got["drift@x.io"]["zip"] == "01234"
    assert got["exact@x.io"]["total_revenue"] == "12345678901234567.25"


def test_a_truncated_ndjson_line_is_refused_before_any_write(tmp_path, sandbox_env, capsys):
    sandbox = sandbox_env(rate_requests=None)
    path = tmp_path / "in.ndjson"
    path.write_bytes(ndjson([{"email": f"u{i}@x.io"} for i in range(1500)])
                     + b'{"email": "cut@x.io", "firstna')
    assert run(tmp_path, sandbox, path) == 2
    err = one_line_error(capsys)
    assert f"{path}, row 1501" in err and "not one JSON object" in err
    assert stored(sandbox) == {}


# --- files that change or cannot be read --------------------------------------------------


def test_rows_appended_while_the_file_is_read_are_left_for_the_next_run(
        tmp_path, sandbox_env, monkeypatch):
    sandbox = sandbox_env(rate_requests=None)
    path = tmp_path / "in.csv"
    path.write_bytes(b"email,firstname\n" + csv_rows(300))
    real_run = source_module._CsvScan.run

    def checked_then_appended(self: source_module._CsvScan) -> None:
        real_run(self)
        with path.open("ab") as f:  # another process appends, the last record half-written
            f.write(csv_rows(50, 301) + b"late@x.io,La,te,extra")

    monkeypatch.setattr(source_module._CsvScan, "run", checked_then_appended)
    assert run(tmp_path, sandbox, path) == 0
    assert len(stored(sandbox)) == 300
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert (summary["rows_read"], summary["created"], summary["rejected"]) == (300, 300, 0)


def test_a_folder_or_a_pipe_as_input_is_a_usage_error(tmp_path, sandbox_env, capsys):
    sandbox = sandbox_env(rate_requests=None)
    folder = tmp_path / "data.csv"
    folder.mkdir()
    assert run(tmp_path, sandbox, folder) == 2
    assert f"{folder}: is a folder" in one_line_error(capsys)
    pipe = tmp_path / "pipe.csv"
    os.mkfifo(pipe)
    assert run(tmp_path, sandbox, pipe) == 2
    assert f"{pipe}: is not a regular file" in one_line_error(capsys)


def test_an_unreadable_input_is_a_usage_error_naming_it(tmp_path, sandbox_env, monkeypatch,
                                                         capsys):
    sandbox = sandbox_env(rate_requests=None)
    path = tmp_path / "in.csv"
    path.write_bytes(b"email,firstname\n" + csv_rows(3))
    real_open = Path.open

    def denied(self: Path, *args, **kwargs):  # tests run as root: chmod 000 would not stop us
        if self == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied)
    assert run(tmp_path, sandbox, path) == 2
    assert one_line_error(capsys) == (
        f"hsbulk: error: {path}: cannot read the file: Permission denied")


def test_a_read_failure_mid_run_names_the_file_and_row(tmp_path, sandbox_env, monkeypatch,
                                                       capsys):
    sandbox = sandbox_env(rate_requests=None)
    path = tmp_path / "in.csv"
    path.write_bytes(b"email,firstname\n" + csv_rows(400))
    monkeypatch.setattr(source_module, "_BLOCK_BYTES", 4096)
    real_blocks = source_module._blocks

    def failing(*args, **kwargs) -> Iterator[bytes]:
        blocks = real_blocks(*args, **kwargs)
        if args[3] is None:  # the pre-scan reads fine; the import's read fails
            yield from blocks
            return
        yield next(blocks)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(source_module, "_blocks", failing)
    results = tmp_path / "results.csv"
    assert run(tmp_path, sandbox, path, "--results", str(results)) == 2
    err = one_line_error(capsys)
    assert err.startswith(f"hsbulk: error: {path}, row ")
    assert err.endswith(": cannot read the file: Input/output error")
    written = pl.read_csv(results, infer_schema=False)  # what was written is accounted for
    assert written.height == len(sandbox.records("contacts"))


def test_the_progress_total_counts_rows_without_mapping_the_file(tmp_path):
    """estimate_rows reads line ends in blocks (polars' row count maps the whole file into
    memory, which made an import's peak grow with its input): LF, CRLF, CR-only, and a
    last line without its line end."""
    from engine.imports.runner import estimate_rows
    from engine.source import SourceSpec, open_source

    for name, data in (("lf", b"a,b\n1,2\n3,4\n"), ("crlf", b"a,b\r\n1,2\r\n3,4\r\n"),
                       ("cr", b"a,b\r1,2\r3,4\r"), ("open", b"a,b\n1,2\n3,4")):
        path = tmp_path / f"{name}.csv"
        path.write_bytes(data)
        assert estimate_rows(open_source(SourceSpec(str(path)))) == 2, name
