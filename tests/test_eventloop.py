"""The event loop runs use: uvloop where installed, asyncio's when asked."""

from __future__ import annotations

import asyncio

import pytest

from engine import eventloop


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_runs_use_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HSBULK_EVENT_LOOP", raising=False)
    assert eventloop.run(loop_module).startswith("uvloop")


def test_asyncio_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HSBULK_EVENT_LOOP", "asyncio")
    assert eventloop.run(loop_module).startswith("asyncio")
