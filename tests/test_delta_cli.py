"""Drift and mirror at the CLI: `--verify-sample` repairs exactly what was edited in
HubSpot, `--mirror` archives exactly what left the input (and refuses above its guard)."""

import json
import random
import urllib.request

from engine.cli import main
from tests.test_delta import (
    WRITES,
    contact,
    delta_import,
    fast_sandbox,  # noqa: F401  (fixture)
    recorded,  # noqa: F401  (fixture)
    stored_contacts,
    write_calls,
    write_rows,
)


def first_night(tmp_path, sandbox, n: int):
    """`n` contacts loaded with --delta: the rows and the input file."""
    rows = [contact(i) for i in range(n)]
    source = tmp_path / "contacts.csv"
    write_rows(source, rows)
    assert delta_import(sandbox, source, tmp_path)[0] == 0
    return rows, source


def edit_in_hubspot(sandbox, ids: list[str], firstname: str) -> None:
    """Someone edits records in HubSpot itself (the sandbox's API, with its token)."""
    body = {"inputs": [{"id": i, "properties": {"firstname": firstname}} for i in ids]}
    request = urllib.request.Request(
        sandbox.base_url + "/crm/v3/objects/contacts/batch/update",
        data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {sandbox.token}",
                 "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200


def test_exactly_the_records_edited_in_hubspot_are_drifted_and_repaired(
        tmp_path, fast_sandbox, recorded):  # noqa: F811
    rows, source = first_night(tmp_path, fast_sandbox, 5_000)
    by_email = {r["properties"]["email"]: r["id"] for r in fast_sandbox.records("contacts")}
    edited = random.Random(4).sample(sorted(by_email), 50)
    edit_in_hubspot(fast_sandbox, [by_email[e] for e in edited], "Edited in HubSpot")

    before = write_calls(fast_sandbox.audit())
    recorded.clear()
    code, night = delta_import(fast_sandbox, source, tmp_path, "--verify-sample", "100000")
    assert code == 0
    assert night["drifted"] == 50 and night["unchanged"] == 5_000 and night["balanced"]
    sent = [i for _, body in recorded for i in body["inputs"]]
    assert sorted(i["id"] for i in sent) == sorted(by_email[e] for e in edited)
    email_of = {rid: email for email, rid in by_email.items()}
    for item in sent:  # only the drifted property, with the value of the input
        index = int(email_of[item["id"]].removeprefix("person").split("@")[0])
        assert item["properties"] == {"firstname": rows[index]["firstname"]}
    assert write_calls(fast_sandbox.audit()) - before == 1  # 50 inputs, one call
    stored = stored_contacts(fast_sandbox)
    for email in edited:
        index = int(email.removeprefix("person").split("@")[0])
        assert stored[email]["firstname"] == rows[index]["firstname"]


def test_mirror_archives_exactly_the_rows_that_left_and_refuses_above_the_guard(
        tmp_path, fast_sandbox, capsys):  # noqa: F811
    rows, source = first_night(tmp_path, fast_sandbox, 10_000)
    outsider = tmp_path / "outsider.csv"  # a record this state never wrote
    write_rows(outsider, [contact(99_999)])
    assert main(["import", str(outsider), "--object", "contacts", "--id-property", "email",
                 "--base-url", fast_sandbox.base_url, "--rate", "none", "--quiet",
                 "--checkpoint", str(tmp_path / "other.db")]) == 0

    gone = set(random.Random(9).sample(range(10_000), 200))
    kept = [r for i, r in enumerate(rows) if i not in gone]
    write_rows(source, kept)
    capsys.readouterr()
    code = main(["import", str(source), "--object", "contacts", "--id-property", "email",
                 "--delta", "--mirror", "--dry-run", "--base-url", fast_sandbox.base_url,
                 "--checkpoint", str(tmp_path / "nightly.db"), "--quiet"])
    listing = capsys.readouterr().out.splitlines()
    assert code == 0 and "would archive 200 of the 10,000" in listing[0]
    assert {line.split("\t")[1] for line in listing[1:]} == {
        rows[i]["email"] for i in gone}
    assert len(fast_sandbox.records("contacts")) == 10_001  # the dry run sent nothing

    code, night = delta_import(fast_sandbox, source, tmp_path, "--mirror")
    assert code == 0 and night["archived"] == 200 and night["unchanged"] == 9_800
    live = {r["properties"]["email"] for r in fast_sandbox.records("contacts")}
    assert live == {r["email"] for r in kept} | {"person99999@example.com"}

    write_rows(source, kept[: len(kept) // 2])
    capsys.readouterr()
    code = main(["import", str(source), "--object", "contacts", "--id-property", "email",
                 "--delta", "--mirror", "--base-url", fast_sandbox.base_url, "--rate",
                 "none", "--quiet", "--checkpoint", str(tmp_path / "nightly.db")])
    err = capsys.readouterr().err
    assert code == 2 and "would archive 4,900" in err, err
    assert "Traceback" not in err
    assert len(fast_sandbox.records("contacts")) == 9_801  # nothing archived
    assert not any(route.endswith(WRITES[-1]) and c["inputs"] > 200
                   for route, c in fast_sandbox.audit()["calls"].items())
