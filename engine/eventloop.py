"""The event loop every run uses: uvloop where it is installed, else asyncio's own.

uvloop (a dependency on Linux and macOS) runs the sockets, timers and callbacks of the
loop in C: the import's main thread, which reads, encodes, sends and journals every batch,
spends about 40% of its time in aiohttp and the loop, and an import of 500k contacts
against the sandbox took 5-10% less wall time with it (benchmarks/run_all.py, import
case). `HSBULK_EVENT_LOOP=asyncio` keeps asyncio's loop (to rule the loop out when
debugging).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, TypeVarTuple, Unpack

import anyio

try:
    import uvloop
except ImportError:  # Windows, where it is not a dependency
    uvloop = None  # type: ignore[assignment]

T = TypeVar("T")
Args = TypeVarTuple("Args")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop unless it is absent or turned off (None: asyncio's own)."""
    if uvloop is None or os.environ.get("HSBULK_EVENT_LOOP", "").strip().lower() == "asyncio":
        return None
    return uvloop.new_event_loop


def run(func: Callable[[Unpack[Args]], Awaitable[T]], *args: *Args) -> T:
    """`anyio.run(func, *args)` on the loop `loop_factory` picks."""
    options: dict[str, Any] = {"loop_factory": loop_factory()}
    return anyio.run(func, *args, backend_options=options)
