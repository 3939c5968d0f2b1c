"""`python -m engine sandbox` as a separate process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request


def _read_announcement(proc: subprocess.Popen[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    assert proc.stdout is not None
    while len(found) < 2:
        line = proc.stdout.readline()
        assert line, "sandbox exited before announcing itself"
        key, sep, value = line.strip().partition("=")
        if sep and key in ("base_url", "token"):
            found[key] = value
    return found


def _get(url: str, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:  # loopback only
        return resp.status, json.loads(resp.read())


def test_cli_announces_serves_and_exits_cleanly_on_sigterm():
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "sandbox", "--port", "0", "--rate", "50/10s",
         "--token", "pat-cli-test"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        found = _read_announcement(proc)
        assert found["base_url"].startswith("http://127.0.0.1:")
        assert found["token"] == "pat-cli-test"
        status, body = _get(found["base_url"] + "/crm/v3/objects/contacts", found["token"])
        assert status == 200 and body == {"results": []}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


def test_cli_rejects_a_bad_rate():
    done = subprocess.run([sys.executable, "-m", "engine", "sandbox", "--rate", "fast"],
                          capture_output=True, text=True, check=False, timeout=30)
    assert done.returncode == 2
    assert "rate must look like" in done.stderr
