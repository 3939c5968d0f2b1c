"""The import's journal writer: grouped commits through the journal's one thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskStatus

from engine.journal import JournalThread, SqliteCheckpoint, Transition

T = TypeVar("T")


class Journal:
    """The async face of the checkpoint for one step: one writer thread, grouped commits.

    `commit` waits until its transitions are durable; `defer` hands over transitions
    that may wait (a batch's DONE: lost in a crash, the batch is merely reconciled as in
    flight on resume), which ride with the next commit or are written within
    `flush_s` on their own.
    """

    def __init__(self, checkpoint: SqliteCheckpoint, thread: JournalThread, *,
                 flush_s: float = 0.25, defer_max: int = 64) -> None:
        self.checkpoint = checkpoint
        self.thread = thread
        self.flush_s = flush_s
        self.defer_max = defer_max
        self._pending: list[tuple[Transition, anyio.Event]] = []
        self._deferred: list[Transition] = []
        self._wake = anyio.Event()
        self._closed = False
        self._failure: BaseException | None = None

    def __repr__(self) -> str:
        return (f"Journal(pending={len(self._pending)}, deferred={len(self._deferred)}, "
                f"closed={self._closed})")

    async def commit(self, *transitions: Transition) -> None:
        """Wait until `transitions` are durable (grouped with whatever else is pending)."""
        self._raise_failure()
        done = anyio.Event()
        self._pending += [(t, done) for t in transitions]
        self._wake.set()
        await done.wait()
        self._raise_failure()

    def defer(self, transition: Transition) -> None:
        """Journal `transition` with the next commit, or within `flush_s`."""
        self._raise_failure()
        self._deferred.append(transition)
        if len(self._deferred) >= self.defer_max:
            self._wake.set()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with anyio.move_on_after(self.flush_s):
                await self._wake.wait()
            self._wake = anyio.Event()
            group, self._pending = self._pending, []
            deferred, self._deferred = self._deferred, []
            if group or deferred:
                try:
                    with anyio.CancelScope(shield=True):
                        await self.thread.call(self.checkpoint.apply,
                                               deferred + [t for t, _ in group])
                except Exception as exc:  # the journal is broken: nothing may be sent now
                    self._failure = exc
                for _, done in group:
                    done.set()  # setting an Event twice is harmless
            if self._closed and not self._pending and not self._deferred:
                return

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    async def flush(self) -> None:
        """After a hard stop: write what is deferred (answered batches' DONE)."""
        deferred, self._deferred = self._deferred, []
        if deferred and self._failure is None:
            await self.thread.call(self.checkpoint.apply, deferred)

    async def call(self, func: Callable[..., T], *args: Any) -> T:
        return await self.thread.call(func, *args)
