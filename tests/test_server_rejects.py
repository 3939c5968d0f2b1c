"""Rows HubSpot refuses are reported like local rejects: the source column mapped to the
property, the value that was sent, HubSpot's code and its human message, never raw JSON.

End to end against the sandbox with values only the server refuses (a record id that does
not exist; a string over HubSpot's length limit with the local limit raised), and the
answer decoding fed HubSpot's error shapes by hand (HUBSPOT_API.md, "Error bodies").
"""


import orjson
import polars as pl

import engine
from engine.batch import Batch
from engine.cli import main
from engine.imports.answers import Keys, SourceNames, read_answer, reject_from, sourced
from engine.journal import Reject
from engine.normalize import NormalizeOptions
from tests.conftest import write_csv


def test_an_update_of_a_missing_record_names_the_id_column_and_value(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    seed = write_csv(tmp_path / "seed.csv", ["Email"], [["a@example.com"]])
    assert main(["import", str(seed), "--object", "contacts", "--id-property", "email",
                 "--base-url", sandbox.base_url, "--rate", "none", "--quiet",
                 "--checkpoint", str(tmp_path / "seed.db")]) == 0
    (rid,) = [r["id"] for r in sandbox.records("contacts")]
    update = write_csv(tmp_path / "update.csv", ["Record ID", "Name"],
                       [[rid, "Pilot"], ["999999", "Ghost"]])
    code = main(["import", str(update), "--object", "contacts", "--mode", "update",
                 "--map", "Name=firstname", "--base-url", sandbox.base_url, "--rate", "none",
                 "--quiet", "--checkpoint", str(tmp_path / "u.db"),
                 "--rejects", str(tmp_path / "rejects.csv")])
    assert code == 1
    assert [r["properties"].get("firstname") for r in sandbox.records("contacts")] == [
        "Pilot"]
    rejects = pl.read_csv(tmp_path / "rejects.csv", infer_schema=False)
    row = rejects.row(0, named=True)
    assert rejects.height == 1
    assert (row["hsbulk_source_row"], row["hsbulk_column"], row["hsbulk_value"],
            row["hsbulk_code"]) == ("2", "Record ID", "999999", "OBJECT_NOT_FOUND")
    assert "999999" in row["hsbulk_message"] and "{" not in row["hsbulk_message"]
    assert (row["Record ID"], row["Name"]) == ("999999", "Ghost")


def test_a_value_over_the_server_limit_names_its_column(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    long = "x" * 70_000
    source = tmp_path / "c.ndjson"  # (a CSV file refuses fields over 65,536 characters)
    source.write_bytes(b"".join(orjson.dumps({"Email": e, "Job Title": j}) + b"\n" for e, j in (
        ("a@example.com", "Pilot"), ("b@example.com", long), ("c@example.com", "Cook"))))
    options = engine.ImportOptions(id_property="email", map={"Job Title": "jobtitle"},
                                   values=NormalizeOptions(max_chars=100_000))
    result = engine.import_file_sync(
        source, "contacts", options, connection=engine.Connection(sandbox.base_url, rate=None),
        checkpoint=tmp_path / "c.db", rejects=tmp_path / "rejects.csv")
    assert (result.counts.created, result.counts.rejected) == (2, 1)
    assert {r["properties"]["email"] for r in sandbox.records("contacts")} == {
        "a@example.com", "c@example.com"}
    rejects = pl.read_csv(tmp_path / "rejects.csv", infer_schema=False)
    row = rejects.row(0, named=True)
    assert (row["hsbulk_source_row"], row["hsbulk_column"], row["hsbulk_code"]) == (
        "2", "Job Title", "STRING_TOO_LONG")
    assert row["hsbulk_value"] == long
    assert row["hsbulk_message"].startswith("Property jobtitle has a value of 70000 characters")


# -- HubSpot's error shapes, decoded -------------------------------------------------------

INVALID = ('Property values were not valid: [{"isValid":false,"message":"Email address '
           'x@ is invalid","error":"INVALID_EMAIL","name":"email"},{"isValid":false,'
           '"message":"Lead was not one of the allowed options: [lead, customer]",'
           '"error":"INVALID_OPTION","name":"lifecyclestage"}]')


def batch() -> Batch:
    inputs = ['{"properties":{"email":"ok@example.com"},"objectWriteTraceId":"7"}',
              '{"properties":{"email":"x@","lifecyclestage":"Lead"},"objectWriteTraceId":"8"}']
    return Batch(0, [7, 8], ["ok@example.com", "x@"], inputs, ["ok@example.com", "x@"])


NAMES = SourceNames({"email": "E-mail", "lifecyclestage": "Stage"}, "email")


def test_a_validation_message_alone_becomes_one_reject_per_property():
    reject = reject_from(8, 400, "VALIDATION_ERROR", INVALID, [])
    assert (reject.column, reject.code) == ("email", "INVALID_EMAIL")
    assert reject.message == ("Email address x@ is invalid; Lead was not one of the allowed "
                              "options: [lead, customer]")
    body = orjson.dumps({"status": "COMPLETE", "results": [
        {"id": "101", "objectWriteTraceId": "7", "properties": {}}], "errors": [
        {"status": "error", "category": "VALIDATION_ERROR", "message": INVALID,
         "context": {"objectWriteTraceId": ["8"]}}]})
    answer = read_answer(207, body, batch(), [0, 1], "create",
                         Keys("email", "email", "contacts", False))
    assert sourced(answer.sent.rejects, batch(), NAMES) == [
        Reject(8, "E-mail", "INVALID_EMAIL", "Email address x@ is invalid", "x@"),
        Reject(8, "Stage", "INVALID_OPTION",
               "Lead was not one of the allowed options: [lead, customer]", "Lead")]


def test_error_details_give_the_code_property_and_inner_message():
    body = orjson.dumps({"status": "COMPLETE", "results": [], "errors": [
        {"status": "error", "category": "VALIDATION_ERROR", "message": INVALID,
         "context": {"objectWriteTraceId": ["8"], "propertyName": ["email"]},
         "errors": [{"message": "Email address x@ is invalid", "code": "INVALID_EMAIL",
                     "context": {"propertyName": ["email"]}}]}]})
    answer = read_answer(207, body, batch(), [1], "create",
                         Keys("email", "email", "contacts", False))
    assert sourced(answer.sent.rejects, batch(), NAMES) == [
        Reject(8, "E-mail", "INVALID_EMAIL", "Email address x@ is invalid", "x@")]


def test_a_plain_message_stays_as_it_is():
    reject = reject_from(7, 409, "CONFLICT", "Contact already exists. Existing ID: 5", None)
    assert (reject.column, reject.code, reject.message) == (
        "", "CONFLICT", "Contact already exists. Existing ID: 5")
    assert sourced([reject], batch(), NAMES) == [reject]
