"""Stopping a run politely: a stop request, a grace period, then a hard stop.

A `StopRequest` is handed to a runner by whoever may want it to stop (the CLI on SIGINT
or SIGTERM; a library caller at will). On `request()` the runner stops making new work:
no new batch leaves, answers already in flight are awaited and journaled. On `force()`
(a second signal, or the grace period over) every scope a runner opened with
`hard_scope()` is cancelled; the runner then journals what it knows and returns a
"stopped" account. Either way the journal stays consistent and a re-run resumes.

The library installs no signal handler: `watch_signals` is the CLI's.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import anyio

log = logging.getLogger("hsbulk")

GRACE_S = 10.0
INTERRUPTED = "interrupted"


class StopRequest:
    """A polite stop: `request()` first, `force()` when politeness ran out."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.forced = False
        self._scopes: dict[anyio.CancelScope, bool] = {}  # scope -> cancel on request

    def __repr__(self) -> str:
        return (f"StopRequest(reason={self.reason!r}, forced={self.forced}, "
                f"scopes={len(self._scopes)})")

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def request(self, reason: str = INTERRUPTED) -> None:
        if self.reason is None:
            self.reason = reason
        for scope, on_request in self._scopes.items():
            if on_request:
                scope.cancel()

    def force(self, reason: str = INTERRUPTED) -> None:
        """Cancel every hard scope now (and every one opened from now on)."""
        self.request(reason)
        self.forced = True
        for scope in self._scopes:
            scope.cancel()

    @contextmanager
    def hard_scope(self, *, on_request: bool = False) -> Iterator[anyio.CancelScope]:
        """A cancel scope that `force()` cancels (and `request()` too, with `on_request`:
        for work that leaves nothing half done, such as reading the input before any
        write); the code after it still runs."""
        scope = anyio.CancelScope()
        if self.forced or (on_request and self.requested):
            scope.cancel()
        self._scopes[scope] = on_request
        try:
            with scope:
                yield scope
        finally:
            self._scopes.pop(scope, None)


class PendingSignals:
    """Signals that arrive while no event loop listens: remembered, never raised.

    Installed by the CLI around its event loops, so that SIGINT/SIGTERM between two
    loops (reading the job file, writing the reports) neither kills the process nor
    raises a traceback: the run ends as interrupted once its outputs are written.
    """

    def __init__(self) -> None:
        self.count = 0

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1


PENDING = PendingSignals()  # the process's one record of signals no event loop heard


async def watch_signals(stop: StopRequest, pending: PendingSignals, *,
                        grace_s: float = GRACE_S) -> None:
    """First SIGINT/SIGTERM: `stop.request()`, `force()` after `grace_s`; second: at once."""
    # The loop puts the default handlers back when the receiver closes, and the default
    # SIGTERM kills the process: what was there before goes back at once, not after the
    # loop's teardown (which may wait for worker threads).
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    async with anyio.create_task_group() as tg:
        seen = pending.count
        if seen:
            _first(stop, tg, grace_s)
        with _restored(before), anyio.open_signal_receiver(signal.SIGINT,
                                                           signal.SIGTERM) as signals:
            async for signum in signals:
                seen += 1
                pending.count += 1
                if seen == 1:
                    log.warning("received signal %d: finishing the requests in flight "
                                "(up to %.0f s; again to stop at once)", signum, grace_s)
                    _first(stop, tg, grace_s)
                else:
                    log.warning("received signal %d again: stopping now", signum)
                    stop.force()


@contextmanager
def _restored(handlers: dict[signal.Signals, Any]) -> Iterator[None]:
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            if handler is not None:
                signal.signal(signum, handler)


def _first(stop: StopRequest, tg: anyio.abc.TaskGroup, grace_s: float) -> None:
    stop.request()

    async def later() -> None:
        await anyio.sleep(grace_s)
        stop.force()

    tg.start_soon(later)
