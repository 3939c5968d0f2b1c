from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest

from engine.sandbox import Sandbox, SandboxSettings, running_sandbox

UNLIMITED = SandboxSettings(rate_requests=None, search_rate_per_s=None)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


class Api:
    """A tiny JSON client for the sandbox: `await api.post(path, json)` -> Reply."""

    def __init__(self, sandbox: Sandbox, session: aiohttp.ClientSession) -> None:
        self.sandbox = sandbox
        self.session = session

    async def call(self, method: str, path: str, json: Any = None, *,
                   token: str | None = None, params: dict[str, str] | None = None) -> Reply:
        headers = {"Authorization": f"Bearer {token or self.sandbox.token}"}
        data = orjson.dumps(json) if json is not None else None
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.request(method, self.sandbox.base_url + path, data=data,
                                        headers=headers, params=params) as resp:
            raw = await resp.read()
            try:
                body = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                body = raw.decode()
            return Reply(resp.status, dict(resp.headers), body)

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.call("POST", path, json, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.call("PATCH", path, json, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        return await self.call("DELETE", path, **kw)

    async def create_contacts(self, *props: dict[str, str]) -> list[str]:
        reply = await self.post("/crm/v3/objects/contacts/batch/create",
                                {"inputs": [{"properties": p} for p in props]})
        assert reply.status == 201, reply.body
        return [r["id"] for r in reply.body["results"]]


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with running_sandbox(UNLIMITED) as sb:
        yield sb


@pytest.fixture
async def api(sandbox: Sandbox) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(sandbox, session)


def fresh_session() -> aiohttp.ClientSession:
    """A session that opens a new connection per request (faults abort connections)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
