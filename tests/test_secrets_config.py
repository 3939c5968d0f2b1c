"""Secrets stay secret, bad connection settings fail at once, progress tells the truth."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from rich.console import Console

from engine.cli import main
from engine.report import ProgressView
from engine.sandbox import SandboxSettings, running_sandbox
from tests.test_importer import HEADER, MAPS, contacts, write_csv

TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"


# -- a server that echoes the Authorization header in its 207 answers ----------------------


class EchoingHubSpot:
    """A sandbox behind a proxy that answers every batch create 207, each input failing
    with a message that quotes the request's Authorization header (a careless server)."""

    def __init__(self) -> None:
        self.base_url = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        settings = SandboxSettings(rate_requests=None, search_rate_per_s=None, token=TOKEN)
        async with running_sandbox(settings) as sandbox, aiohttp.ClientSession() as session:

            async def handle(request: web.Request) -> web.Response:
                body = await request.read()
                auth = request.headers.get("Authorization", "")
                if request.path.endswith("/batch/create"):
                    traces = [i["objectWriteTraceId"] for i in orjson.loads(body)["inputs"]]
                    return web.json_response({
                        "status": "COMPLETE", "results": [], "numErrors": 1,
                        "errors": [{"status": "error", "category": "VALIDATION_ERROR",
                                    "message": f"Request with Authorization: {auth} refused",
                                    "context": {"objectWriteTraceId": traces},
                                    "errors": [{"message": f"echo {auth}", "code": "X"}]}],
                    }, status=207)
                headers = {k: v for k, v in request.headers.items()
                           if k in ("Authorization", "Content-Type")}
                async with session.request(request.method, sandbox.base_url + request.path_qs,
                                           data=body or None, headers=headers) as answer:
                    return web.Response(status=answer.status, body=await answer.read(),
                                        content_type="application/json")

            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            self.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

    def __enter__(self) -> EchoingHubSpot:
        self._thread.start()
        assert self._ready.wait(10), "the echoing server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def test_a_token_echoed_in_a_207_reaches_no_file_and_no_output(tmp_path):
    source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(3))
    outputs = {name: tmp_path / name for name in ("r.csv", "s.json", "results.csv")}
    with EchoingHubSpot() as server:
        done = subprocess.run(
            [sys.executable, "-m", "engine", "import", str(source), "--object", "contacts",
             "--mode", "create", "--id-property", "email", *MAPS, "--base-url",
             server.base_url, "--rate", "none", "--rejects", str(outputs["r.csv"]),
             "--results", str(outputs["results.csv"]), "--checkpoint",
             str(tmp_path / "cp" / "j.db"), "--summary", str(outputs["s.json"]), "--verbose"],
            env={**os.environ, "HUBSPOT_ACCESS_TOKEN": TOKEN}, capture_output=True,
            timeout=60, check=False)
    assert done.returncode == 1, done.stderr.decode()
    rejects = outputs["r.csv"].read_text()
    assert rejects.count("[REDACTED]") >= 3  # every row was rejected with the echo, scrubbed
    journal = list((tmp_path / "cp").iterdir())
    assert any(p.name == "j.db" for p in journal)
    for blob in [done.stdout, done.stderr, *(p.read_bytes() for p in outputs.values()),
                 *(p.read_bytes() for p in journal)]:
        assert TOKEN.encode() not in blob
        assert TOKEN[-12:].encode() not in blob


# -- the sandbox's control routes ----------------------------------------------------------


async def test_sandbox_control_routes_need_the_token_and_never_show_one():
    other = "pat-na1-99999999-8888-7777-6666-555555555555"
    settings = SandboxSettings(rate_requests=100, extra_tokens=(other,))
    routes = [("GET", "/__sandbox/audit"), ("GET", "/__sandbox/records/contacts"),
              ("GET", "/__sandbox/associations/contacts/companies"),
              ("GET", "/__sandbox/config"), ("POST", "/__sandbox/config"),
              ("POST", "/__sandbox/reset")]
    async with running_sandbox(settings) as sandbox, aiohttp.ClientSession() as s:
        for token in (sandbox.token, other):
            async with s.get(sandbox.base_url + "/crm/v3/objects/contacts",
                             headers={"Authorization": f"Bearer {token}"}) as answer:
                assert answer.status == 200
        for method, path in routes:
            for headers in ({}, {"Authorization": "Bearer pat-guess"}):
                async with s.request(method, sandbox.base_url + path, headers=headers,
                                     json={"fault_5xx": 1.0}) as answer:
                    assert answer.status == 401, (method, path)
        assert sandbox.settings.fault_5xx == 0.0
        async with s.get(sandbox.base_url + "/__sandbox/audit",
                         headers={"Authorization": f"Bearer {other}"}) as answer:
            assert answer.status == 200
            text = await answer.text()
    assert len(orjson.loads(text)["window"]["by_token"]) == 2
    for token in (sandbox.token, other):
        assert token not in text


# -- base URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1 :8080", "a space"),
    ("https://api .hubapi.com", "a space"),
    ("https://api.hubapi.com:0", "port"),
    ("https://-api.hubapi.com", "not a valid host"),
    ("https://api.hubapi.com:8443?x=1", "query"),
])
def test_a_malformed_base_url_is_refused_at_once(tmp_path, monkeypatch, capsys, url, reason):
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", TOKEN)
    source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(1))
    started = time.monotonic()
    code = main(["import", str(source), "--object", "contacts", "--base-url", url,
                 "--checkpoint", str(tmp_path / "j.db"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert time.monotonic() - started < 5
    assert err.startswith("hsbulk: error: base URL ") and err.count("\n") == 1
    assert reason in err and "Traceback" not in err


# -- tokens ---------------------------------------------------------------------------------


def _token_file(tmp_path: Path, content: bytes | None) -> Path:
    path = tmp_path / "token"
    if content is None:
        path.mkdir(mode=0o700)
    else:
        path.write_bytes(content)
        path.chmod(0o600)
    return path


@pytest.mark.parametrize(("content", "env", "reason"), [
    (None, None, "not a regular file"),
    (f"{TOKEN}\nX-Evil: 1\n".encode(), None, "line break"),
    (f"{TOKEN} \n".encode(), None, "a space"),
    (f"{TOKEN[:10]} {TOKEN[10:]}".encode(), None, "a space"),
    (f"{TOKEN}\t".encode(), None, "control character"),
    (b"", None, "empty"),
    (b"\n", None, "empty"),
    (b"\xffpat-na1\n", None, "UTF-8"),
    (None, f"{TOKEN}\r\nX-Evil: 1", "line break"),
    (None, f"{TOKEN[:10]} {TOKEN[10:]}", "a space"),
    (None, f"{TOKEN}\u00e9", "non-ASCII"),
])
def test_a_bad_token_is_a_configuration_error_that_never_shows_it(
        tmp_path, sandbox_env, monkeypatch, capsys, content, env, reason):
    sandbox = sandbox_env(rate_requests=None, token=TOKEN)
    flags = []
    if env is not None:
        monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", env)
    else:
        flags = ["--token-file", str(_token_file(tmp_path, content))]
    source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(1))
    code = main(["import", str(source), "--object", "contacts", "--id-property", "email",
                 *MAPS, "--base-url", sandbox.base_url, "--checkpoint",
                 str(tmp_path / "j.db"), "--quiet", *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("hsbulk: error: ") and err.count("\n") == 1
    assert reason in err and "token" in err.lower()
    assert TOKEN[:10] not in err and TOKEN[-10:] not in err
    assert sandbox.audit()["requests"] == 0  # refused before any call


# -- progress -------------------------------------------------------------------------------


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "hsbulk"]


def test_resumed_progress_counts_only_this_runs_rows(clock, caplog):
    caplog.set_level(logging.INFO, logger="hsbulk")
    view = ProgressView(interval_s=0.0, clock=clock.now, console=Console(file=io.StringIO()))
    view.start("contacts", 1000, done_before=600)
    view.update(done=600, done_before=600, total=1000, sent=0, rejected=0, retries=0,
                http_429=0, description="contacts")
    clock.t += 10
    view.update(done=700, done_before=600, total=1000, sent=100, rejected=0, retries=0,
                http_429=0, description="contacts")
    view.stop()
    started, first, later = _lines(caplog)
    assert "1,000 rows" in started and "600 done before" in started
    assert first.startswith("contacts: 600/1,000 rows, 0 rows/s") and "ETA" not in first
    assert later.startswith("contacts: 700/1,000 rows, 10 rows/s") and later.endswith("ETA 30s")


def test_the_live_bar_starts_at_the_done_count_with_an_honest_eta(clock):
    console = Console(file=io.StringIO(), force_terminal=True, width=200)
    view = ProgressView(clock=clock.now, console=console)
    view.start("contacts", 1000, done_before=600)
    clock.t += 10
    view.update(done=700, done_before=600, total=1000, sent=100, rejected=0, retries=0,
                http_429=0, description="contacts")
    view.stop()
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", console.file.getvalue())
    assert "700/1000" in screen and "10 rows/s" in screen and "ETA 30s" in screen


def test_export_progress_speaks_of_records_read_and_written(clock, caplog):
    caplog.set_level(logging.INFO, logger="hsbulk")
    view = ProgressView(interval_s=5.0, clock=clock.now, console=Console(file=io.StringIO()))
    view.start("export contacts", 5000, done_before=2000, unit="records")
    clock.t += 1
    view.update_export(read=500, written=2400, parts=3, total=5000, retries=1, http_429=0,
                       description="export contacts")
    clock.t += 2  # within the interval: no line
    view.update_export(read=600, written=2400, parts=3, total=5000, retries=1, http_429=0,
                       description="export contacts")
    clock.t += 10
    view.update_export(read=1300, written=3200, parts=4, total=5000, retries=1, http_429=0,
                       description="export contacts")
    started, first, second = _lines(caplog)
    assert "5,000 records" in started and "2,000 done before" in started
    assert first == ("export contacts: 2,400/5,000 records written, read 500 (500 records/s), "
                     "3 part files, retries 1, 429s 0, ETA 5s")
    assert second.startswith("export contacts: 3,200/5,000 records written, read 1,300 "
                             "(100 records/s), 4 part files")
    assert "sent" not in first + second and "rejected" not in first + second


def test_a_resumed_import_logs_no_rate_for_rows_an_earlier_run_sent(
        tmp_path, sandbox_env, monkeypatch, caplog):
    sandbox = sandbox_env(rate_requests=None, daily_limit=4)
    monkeypatch.setattr(ProgressView, "default_interval_s", 0.0)
    caplog.set_level(logging.INFO, logger="hsbulk")
    source = write_csv(tmp_path / "contacts.csv", HEADER, contacts(500))
    args = ["import", str(source), "--object", "contacts", "--mode", "upsert",
            "--id-property", "email", *MAPS, "--base-url", sandbox.base_url, "--rate", "none",
            "--checkpoint", str(tmp_path / "j.db")]
    assert main(args) == 4  # the daily quota stops the first run after 300 rows
    sandbox.configure(daily_limit=None)
    caplog.clear()
    assert main(args) == 0
    lines = [line for line in _lines(caplog) if re.match(r"\S+: [\d,]+/500 rows", line)]
    skipping = [line for line in lines if "sent 0," in line]  # nothing sent yet by this run
    assert skipping and re.search(r": [1-9]\d\d/500 rows", skipping[-1])
    assert re.search(r": 500/500 rows, [1-9][\d,]* rows/s, sent [1-9]", lines[-1])
    for line in skipping:  # rows done by the earlier run: no speed, so no 0-second ETA
        assert " 0 rows/s" in line and "ETA" not in line, line
