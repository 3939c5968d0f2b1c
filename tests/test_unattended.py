"""Unattended runs: rows sharing a key land in file order, every error path has its exit
code and one line, and SIGINT/SIGTERM at any moment end resumable with exit 4."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import polars as pl
import pytest

from engine.cli import main
from tests.conftest import StandaloneSandbox
from tests.test_importer import HEADER, MAPS, contacts, write_csv


def test_rows_sharing_a_key_reach_hubspot_in_file_order(tmp_path, sandbox_env):
    """400 keys written twice, 400 rows apart: every batch of the second pass races the
    first one's (8 senders, jittered latency) unless the later batch waits."""
    sandbox = sandbox_env(rate_requests=None, latency_ms=15, seed=3)
    rows = [[f"user{i}@example.com", "Old", f"Last{i}", "Lead"] for i in range(400)]
    rows += [[f"USER{i}@example.com", "New", f"Last{i}", "Lead"] for i in range(400)]
    source = write_csv(tmp_path / "twice.csv", HEADER, rows)
    results = tmp_path / "results.csv"
    code = main(["import", str(source), "--object", "contacts", "--id-property", "email",
                 *MAPS, "--base-url", sandbox.base_url, "--rate", "none", "--quiet",
                 "--concurrency", "8", "--checkpoint", str(tmp_path / "j.db"),
                 "--results", str(results), "--duplicates", "last"])
    assert code == 0
    stored = sandbox.records("contacts")
    assert len(stored) == 400
    assert {r["properties"]["firstname"] for r in stored} == {"New"}
    written = pl.read_csv(results, infer_schema=False)
    assert written.height == 800
    assert written.get_column("action").value_counts().sort("action").rows() == [
        ("created", 400), ("skipped", 400)]


def test_a_key_repeated_inside_one_batch_is_written_last_value_wins(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    rows = [["a@example.com", "First", "X", "Lead"], ["b@example.com", "B", "X", "Lead"],
            ["a@example.com", "Second", "X", "Lead"], ["a@example.com", "Third", "X", "Lead"]]
    source = write_csv(tmp_path / "dup.csv", HEADER, rows)
    code = main(["import", str(source), "--object", "contacts", "--id-property", "email",
                 *MAPS, "--base-url", sandbox.base_url, "--rate", "none", "--quiet",
                 "--checkpoint", str(tmp_path / "j.db"), "--duplicates", "last"])
    assert code == 0
    by_email = {r["properties"]["email"]: r["properties"]["firstname"]
                for r in sandbox.records("contacts")}
    assert by_email == {"a@example.com": "Third", "b@example.com": "B"}


# -- exit codes: every error path ------------------------------------------------------


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def _one_line_error(done: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("hsbulk: error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def standalone():
    sandbox = StandaloneSandbox("--rate", "0")
    yield sandbox
    sandbox.stop()


def test_exit_codes_of_every_error_path(tmp_path, standalone):
    good = write_csv(tmp_path / "contacts.csv", HEADER, contacts(3))
    token_env = {"HUBSPOT_ACCESS_TOKEN": standalone.token}
    base = ["--object", "contacts", "--id-property", "email", *MAPS, "--rate", "none",
            "--quiet"]
    token_dir = tmp_path / "token-dir"
    token_dir.mkdir()
    newline_token = tmp_path / "token"
    newline_token.write_text("abc\ndef\n")
    newline_token.chmod(0o600)
    folder = tmp_path / "a-folder"
    folder.mkdir()

    def imp(source: Path, *extra: str, env=token_env, url=standalone.base_url):
        return _cli(["import", str(source), *base, "--base-url", url,
                     "--checkpoint", str(tmp_path / f"{random.random()}.db"), *extra], env)

    cases = {
        "missing input": (imp(tmp_path / "nope.csv"), 2),
        "folder as input": (imp(folder), 2),
        "token file is a folder": (imp(good, "--token-file", str(token_dir), env={}), 2),
        "token with a newline": (imp(good, "--token-file", str(newline_token), env={}), 2),
        "space in the base url": (imp(good, url="http://127.0.0.1 :9/"), 2),
        "upsert without a key": (_cli(["import", str(good), "--object", "contacts",
                                       "--base-url", standalone.base_url, *MAPS, "--quiet",
                                       "--checkpoint", str(tmp_path / "u.db")], token_env),
                                 2),
        "dry run, upsert without a key": (_cli(
            ["import", str(good), "--object", "contacts", "--base-url", standalone.base_url,
             *MAPS, "--dry-run", "--rejects", str(tmp_path / "dry-rejects.csv")],
            token_env), 2),
        "dry run, normalised file it cannot write": (imp(
            good, "--dry-run", "--rejects", str(tmp_path / "dry2-rejects.csv"),
            "--emit-normalized", str(tmp_path / "out.xlsx")), 2),
        "wrong token": (imp(good, env={"HUBSPOT_ACCESS_TOKEN": "pat-na1-wrong"}), 3),
    }
    for name, (done, expected) in cases.items():
        assert done.returncode == expected, (name, done.stderr)
        line = _one_line_error(done)
        assert standalone.token not in done.stderr + done.stdout, name
        assert len(line) < 400, (name, line)
    assert not (tmp_path / "dry-rejects.csv").exists()  # refused before writing anything
    assert not (tmp_path / "dry2-rejects.csv").exists()


def test_an_unforeseen_error_is_one_line_and_exit_3(tmp_path, sandbox_env, monkeypatch, capsys):
    sandbox = sandbox_env(rate_requests=None)
    source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(3))

    def broken(*args, **kwargs):
        raise RuntimeError("something nobody foresaw\nsecond line")

    monkeypatch.setattr("engine.imports.runner.estimate_rows", broken)
    code = main(["import", str(source), "--object", "contacts", "--id-property", "email",
                 *MAPS, "--base-url", sandbox.base_url, "--quiet",
                 "--checkpoint", str(tmp_path / "j.db")])
    err = capsys.readouterr().err
    assert code == 3
    assert "hsbulk: error: unexpected RuntimeError: something nobody foresaw second line" in err
    assert "Traceback" not in err


def test_rejected_rows_are_the_only_exit_1(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    rows = [*contacts(2), ["bad@example.com", "X", "Y", "Nonsense Stage"]]
    source = write_csv(tmp_path / "contacts.csv", HEADER, rows)
    code = main(["import", str(source), "--object", "contacts", "--id-property", "email",
                 *MAPS, "--base-url", sandbox.base_url, "--rate", "none", "--quiet",
                 "--checkpoint", str(tmp_path / "j.db")])
    assert code == 1
    assert len(sandbox.records("contacts")) == 2


# -- signals at random moments ---------------------------------------------------------

ROWS = 20_000
JOB = """
[job]
name = "sig"
checkpoint = "{checkpoint}"

[[steps]]
name = "companies"
object = "companies"
source = "{companies}"
mode = "upsert"
id_property = "domain"
[steps.map]
"Domain" = "domain"
"Name" = "name"

[[steps]]
name = "contacts"
object = "contacts"
source = "{contacts}"
mode = "upsert"
id_property = "email"
[steps.map]
"Email" = "email"
"First Name" = "firstname"
[[steps.associations]]
to = "companies"
column = "Company"
key = "domain"
"""


def _interrupt(command: list[str], env: dict[str, str], delay_s: float,
               signum: int) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(delay_s)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _commands(tmp_path: Path, sandbox) -> dict[str, tuple[list[str], Path]]:
    people = write_csv(tmp_path / "people.csv", ["Email", "First Name", "Company"],
                       [[f"p{i}@example.com", f"P{i}", f"c{i % 500}.example.com"]
                        for i in range(ROWS)])
    companies = write_csv(tmp_path / "companies.csv", ["Domain", "Name"],
                          [[f"c{i}.example.com", f"C{i}"] for i in range(500)])
    job = tmp_path / "job.toml"
    job.write_text(JOB.format(checkpoint=tmp_path / "job.db", companies=companies,
                              contacts=people))
    python = [sys.executable, "-m", "engine"]
    common = ["--base-url", sandbox.base_url, "--rate", "none", "--quiet", "--concurrency",
              "2"]
    return {
        "import": ([*python, "import", str(people), "--object", "contacts", "--id-property",
                    "email", "--map", "Email=email", "--map", "First Name=firstname",
                    "--checkpoint", str(tmp_path / "import.db"), "--results",
                    str(tmp_path / "import-results.csv"), "--summary",
                    str(tmp_path / "import.json"), *common], tmp_path / "import.json"),
        "job": ([*python, "run", str(job), "--reports", str(tmp_path / "reports"),
                 "--summary", str(tmp_path / "job.json"), *common], tmp_path / "job.json"),
        "export": ([*python, "export", "contacts", "--out", str(tmp_path / "export"),
                    "--format", "csv", "--checkpoint", str(tmp_path / "export.db"),
                    "--summary", str(tmp_path / "export.json"), *common],
                   tmp_path / "export.json"),
    }


def test_sigint_and_sigterm_at_random_moments_always_exit_4_and_resume(tmp_path):
    sandbox = StandaloneSandbox("--rate", "0", "--latency-ms", "20", "--search-rate", "0")
    rng = random.Random(20261201)
    env = {**os.environ, "HUBSPOT_ACCESS_TOKEN": sandbox.token}
    try:
        commands = _commands(tmp_path, sandbox)
        interrupted = 0
        for name in ("import", "job", "export"):
            command, summary = commands[name]
            if name == "export":  # something to export: the import's records
                done = subprocess.run(commands["import"][0], env=env, capture_output=True,
                                      text=True, timeout=300)
                assert done.returncode == 0, done.stderr
            finished = False
            for attempt in range(7 if name != "export" else 6):
                signum = signal.SIGINT if attempt % 2 == 0 else signal.SIGTERM
                done = _interrupt(command, env, rng.uniform(0.3, 2.5), signum)
                assert "Traceback" not in done.stderr, (name, done.stderr)
                finished = done.returncode == 0
                if finished:
                    break  # it finished before the signal arrived: nothing left to stop
                interrupted += 1
                assert done.returncode == 4, (name, attempt, done.stderr)
                assert "run the same command again to resume" in done.stderr, done.stderr
                account = orjson.loads(summary.read_bytes())  # outputs written, this run's
                summary.unlink()
                states = [account.get("state")] + [s["state"] for s in account.get("steps", ())]
                assert "stopped" in states, (name, account)
                if name == "import":
                    assert (tmp_path / "import-results.csv").exists()
            if not finished:
                final = subprocess.run(command, env=env, capture_output=True, text=True,
                                       timeout=300)
                assert final.returncode == 0, (name, final.stderr)
        assert interrupted >= 12
        contacts_stored = sandbox.get("/__sandbox/audit")["records"]["contacts"]
        assert contacts_stored["live"] == ROWS  # no duplicates, nothing lost
        assert sandbox.get("/__sandbox/audit")["records"]["companies"]["live"] == 500
        results = pl.read_csv(tmp_path / "import-results.csv", infer_schema=False)
        assert results.height == ROWS
        exported = pl.concat([pl.read_csv(p, infer_schema=False) for p in
                              sorted((tmp_path / "export" / "contacts").glob("part-*.csv"))])
        assert exported.height == ROWS and exported["id"].n_unique() == ROWS
        job = orjson.loads((tmp_path / "job.json").read_bytes())
        assert job["rows_read"] == ROWS + 500
        assert (tmp_path / "reports" / "contacts.results.csv").exists()
    finally:
        sandbox.stop()


def test_the_handlers_come_back_as_soon_as_a_run_stops_listening():
    """The event loop leaves SIGTERM at its default (killing the process) when it stops
    listening; a signal during the loop's teardown must still be remembered, not kill."""
    import anyio

    from engine.api import guarded
    from engine.interrupt import PENDING

    async def main_loop() -> object:
        async def go(stop):
            return "done"
        assert await guarded(go, None, True) == "done"
        return signal.getsignal(signal.SIGTERM)  # still inside the loop: its teardown

    previous = signal.getsignal(signal.SIGTERM)
    PENDING.install()
    try:
        assert anyio.run(main_loop) == PENDING._handle
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_a_signal_after_the_run_ended_cannot_turn_its_exit_code_into_a_kill(monkeypatch):
    """Python restores the default handlers while it shuts down, and a default SIGTERM
    would end a finished run with -15: the console script ignores signals once `main`
    has returned (Python leaves ignored signals ignored through shutdown)."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        import engine.__main__ as console  # installs PENDING: restored below

        monkeypatch.setattr(console, "main", lambda: 1)
        with pytest.raises(SystemExit) as exited:
            console.entry()
        assert exited.value.code == 1
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGTERM)  # ignored: this test goes on
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
