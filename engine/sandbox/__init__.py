"""A HubSpot-compatible CRM server (aiohttp.web) for the demo, the tests and the benchmarks.

It imports nothing of the engine: it plays HubSpot, and sharing code with the client
would hide disagreements between the two.

    async with running_sandbox(SandboxSettings(rate_requests=100)) as sandbox:
        ...  # talk to sandbox.base_url with sandbox.token
        assert sandbox.audit()["window"]["max_accepted_in_any_window"] <= 100
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from engine.sandbox.server import (
    MAX_REQUEST_LINE,
    State,
    audit_report,
    build_app,
    edges_dump,
    records_dump,
)
from engine.sandbox.settings import DEFAULT_TOKEN, SandboxSettings

__all__ = ["DEFAULT_TOKEN", "Sandbox", "SandboxSettings", "running_sandbox"]


class Sandbox:
    """A running sandbox: where it listens, and in-process access to its state."""

    def __init__(self, state: State, base_url: str) -> None:
        self._state = state
        self.base_url = base_url

    @property
    def token(self) -> str:
        return self._state.settings.token

    @property
    def settings(self) -> SandboxSettings:
        return self._state.settings

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def audit(self, keys: str | None = None) -> dict[str, Any]:
        """The `GET /__sandbox/audit` report; keys like `contacts:email,deals:legacy_id`."""
        return audit_report(self._state, keys)

    def records(self, object_type: str, archived: bool = False) -> list[dict[str, Any]]:
        """Live (or all) records of a type: ids and stored properties."""
        return records_dump(self._state, object_type, archived)

    def edges(self, from_type: str, to_type: str) -> list[dict[str, Any]]:
        """Association edges of a pair as stored (from, to, typeId, category, label)."""
        return edges_dump(self._state, from_type, to_type)

    def configure(self, **changes: Any) -> SandboxSettings:
        """Change limits, faults or extra tokens at run time (see settings.RUNTIME_FIELDS)."""
        return self._state.configure(**changes)

    def reset(self, keep_schemas: bool = True) -> None:
        """Drop records, edges, counters (and custom schemas unless keep_schemas)."""
        self._state.reset(keep_schemas)

    def __repr__(self) -> str:
        return f"Sandbox(base_url={self.base_url!r}, lean={self.settings.lean})"


@contextlib.asynccontextmanager
async def running_sandbox(settings: SandboxSettings | None = None) -> AsyncIterator[Sandbox]:
    """Serve a sandbox on loopback in this event loop (port 0 = a free port)."""
    settings = settings or SandboxSettings()
    state = State(settings)
    # Request lines past aiohttp's default 8 KB are read, so that the API answers an
    # over-long URL as HubSpot does (414), not with aiohttp's 400.
    runner = web.AppRunner(build_app(state), access_log=None, handle_signals=False,
                           max_line_size=MAX_REQUEST_LINE)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
        await site.start()
        port = runner.addresses[0][1]
        state.base_url = f"http://{settings.host}:{port}"
        yield Sandbox(state, state.base_url)
    finally:
        await runner.cleanup()
