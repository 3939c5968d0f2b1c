"""The event loop every run uses: uvloop where it is installed, else asyncio's own.

uvloop (a dependency on Linux and macOS) runs the sockets, timers and callbacks of the
loop in C: the import's main thread, which reads, encodes, sends and journals every batch,
spends about 40% of its time in aiohttp and the loop, and an import of 500k contacts
against the sandbox took 5-10% less wall time with it (benchmarks/run_all.py, import
case). `HSBULK_EVENT_LOOP=asyncio` keeps asyncio's loop (to rule the loop out when
debugging).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, TypeVarTuple, Unpack

import anyio

T = TypeVar("T")
Args = TypeVarTuple("Args")


def backend_options() -> dict[str, Any]:
    """anyio's asyncio backend options: uvloop unless absent or turned off."""
    if os.environ.get("HSBULK_EVENT_LOOP", "").strip().lower() == "asyncio":
        return {}
    if importlib.util.find_spec("uvloop") is None:
        return {}
    return {"use_uvloop": True}


def run(func: Callable[[Unpack[Args]], Awaitable[T]], *args: *Args) -> T:
    """`anyio.run(func, *args)` on the loop `backend_options` picks."""
    return anyio.run(func, *args, backend_options=backend_options())
