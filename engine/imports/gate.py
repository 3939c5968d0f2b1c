"""The key gate: rows sharing a key reach HubSpot in file order."""

from __future__ import annotations

from collections.abc import Sequence

import anyio


class KeyGate:
    """Rows sharing a key reach HubSpot in file order.

    Holds the case-folded keys of every batch sent and not yet answered; a later batch
    holding one of them waits until that batch is answered. (A key repeated inside one
    batch already closes the batch: see batch.Batcher.) So at most one batch holds a key
    at a time, and memory is bounded by the batches in flight.
    """

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._freed: anyio.Event | None = None  # made only when a batch has to wait

    def __repr__(self) -> str:
        return f"KeyGate(held={len(self._held)})"

    def is_clear(self, keys: Sequence[str] | None) -> bool:
        return keys is None or self._held.isdisjoint(keys)

    def hold(self, keys: Sequence[str] | None) -> None:
        if keys is not None:
            self._held.update(keys)

    def release(self, keys: Sequence[str] | None) -> None:
        if keys is None:
            return
        self._held.difference_update(keys)
        if self._freed is not None:
            self._freed.set()
            self._freed = None

    async def wait_clear(self, keys: Sequence[str] | None) -> None:
        while not self.is_clear(keys):
            if self._freed is None:
                self._freed = anyio.Event()
            await self._freed.wait()
