"""The stages of one import step, wired: producer -> journal IN_FLIGHT -> senders -> DONE.

    source -> normalise -> encode -> dedupe -> batcher     (worker thread, one chunk ahead)
      -> key gate -> journal IN_FLIGHT (a block at a time) -> senders x N
      -> answer -> journal DONE (deferred, grouped)

Stages talk through a bounded memory object stream, so memory is bounded by the buffer,
not by the file. Only this module makes task groups and streams.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio
import anyio.to_thread
from anyio.abc import ObjectSendStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from engine.batch import Batch, Batcher
from engine.errors import (
    ConfigError,
    QuotaExhausted,
    RetryableApiError,
    TransportError,
    first_error,
)
from engine.imports.answers import Sent, SourceNames, sourced
from engine.imports.chunks import Chunk
from engine.imports.dedupe import DUPLICATE_SKIPPED, Dedupe
from engine.imports.delta import DeltaCounts
from engine.imports.gate import KeyGate
from engine.imports.reconcile import Reconciler
from engine.imports.writer import Journal
from engine.interrupt import StopRequest
from engine.journal import BatchRecord, BatchState, Reject, Transition
from engine.source import Source

# batches, local rejects, rows read, the delta diff's counts
Prepared = tuple[list[Batch], list[Reject], int, DeltaCounts | None]


class Encoder(Protocol):
    """Reads the input as chunks ready for the batcher (imports/chunks.py, archive.py)."""

    def chunks(self, source: Source) -> Iterator[Chunk]: ...


class Sender(Protocol):
    """Sends some inputs of a batch until each is written or refused (sender.py,
    archive.py)."""

    async def send(self, batch: Batch, positions: Sequence[int], started: float,
                   ambiguous: bool = False) -> Sent: ...


@dataclass(slots=True)
class StepState:
    rows_read: int = 0
    sent_rows: int = 0
    done_rows: int = 0  # rows of answered batches (server rejects included)
    rejected_rows: int = 0
    local_rejected_rows: int = 0  # rejected before any call (never in a batch)
    duplicate_rows: int = 0  # skipped: another row of their key is sent (--duplicates)
    skipped_rows: int = 0  # rows of batches an earlier run finished (not this run's pace)
    total_rows: int | None = None
    stop_reason: str | None = None
    stop_code: int = 0
    delta: DeltaCounts | None = None  # --delta: rows new, changed, unchanged (this pass)


class Pipeline:
    """Runs the stages of one step over its input; every row ends journaled or unsent."""

    def __init__(self, *, step: str, journal: Journal, encoder: Encoder,
                 sender: Sender, reconciler: Reconciler | None, state: StepState,
                 done: Mapping[int, BatchRecord], stop: StopRequest, batch_size: int,
                 concurrency: int, queue_batches: int, show: Callable[[], None],
                 dedupe: Dedupe | None = None, names: SourceNames | None = None) -> None:
        self.step = step
        self.dedupe = dedupe  # rows sharing a key: one sent (imports/dedupe.py)
        self.names = names  # server rejects named by source column and value
        self.journal = journal
        self.encoder = encoder
        self.sender = sender
        self.reconciler = reconciler  # creates: in-flight batches are read back first
        self.state = state
        self.done = done
        self.stop = stop
        self.concurrency = concurrency
        self.queue_batches = queue_batches
        self.show = show
        # With a duplicate policy no two batches share a key: the gate has nothing to hold.
        self.gate = KeyGate() if dedupe is None else None
        # Sifted keys are unique; the delta state still needs them folded.
        self.batcher = Batcher(batch_size, unique_keys=dedupe is not None
                               and journal.state is None)
        self._block: list[Batch] = []
        # The last block released: journaled IN_FLIGHT (the event: once durable), not queued.
        self._committing: tuple[list[Batch], anyio.Event] | None = None
        self._halted = False  # stopped from inside (daily quota, HubSpot unavailable)
        self._unsent = 0  # batches journaled but dropped by a stop
        self._produced_all = False

    @property
    def stopping(self) -> bool:
        return self._halted or self.stop.requested

    @property
    def complete(self) -> bool:
        """Every batch of the input was answered (a stop may have come too late to matter)."""
        return self._produced_all and not self._unsent and not self.stop.forced

    def halt(self, reason: str, code: int) -> None:
        if self.state.stop_reason is None:
            self._halted = True
            self.state.stop_reason = reason
            self.state.stop_code = code

    async def run(self, source: Source) -> None:
        send, receive = anyio.create_memory_object_stream[Batch](self.queue_batches)
        try:
            with self.stop.hard_scope():
                async with anyio.create_task_group() as outer:
                    await outer.start(self.journal.run)
                    try:
                        async with anyio.create_task_group() as tg:
                            async with receive:
                                for _ in range(self.concurrency):
                                    tg.start_soon(self._sender, receive.clone())
                            await self._produce(send, self.encoder.chunks(source))
                    finally:
                        self.journal.close()
        except BaseExceptionGroup as group:
            leaf = first_error(group)
            if leaf is not None:
                raise leaf from None
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await self.journal.flush()

    # -- the producer -------------------------------------------------------------------

    async def _produce(self, send: MemoryObjectSendStream[Batch], chunks: Iterator[Chunk]) -> None:
        """Feed batches to the senders, journaled IN_FLIGHT a block at a time.

        A worker thread prepares the next chunk (read, normalise, encode, cut into batches)
        while this one is fed, so the senders never wait for a chunk boundary. A block of
        batches is committed IN_FLIGHT in one transaction before any of them is handed to a
        sender: one fsync for many requests. A batch journaled but never sent (the run
        stopped first) is reconciled on resume like any other in flight.
        """
        ahead, prepared = anyio.create_memory_object_stream[Prepared](0)
        async with send, anyio.create_task_group() as tg:
            tg.start_soon(self._read_ahead, ahead, chunks)
            async with prepared:
                async for batches, rejects, rows_read, counts in prepared:
                    if counts is not None and self.state.delta is not None:
                        self.state.delta.add(counts)
                    await self._take(send, batches, rejects, rows_read)
                    if self.stopping:
                        break
                if not self.stopping:
                    for batch in self.batcher.flush():
                        if not await self._skip_done(batch):
                            await self._admit(send, batch)
                    await self._release(send)
                    await self._queue_committed(send)
                    self._produced_all = not self.stopping
                if self._committing is not None:  # stopped: journaled, never sent
                    self._unsent += len(self._committing[0])
                tg.cancel_scope.cancel()  # stopping: no chunk is needed any more

    async def _take(self, send: MemoryObjectSendStream[Batch], batches: list[Batch],
                    rejects: list[Reject], rows_read: int) -> None:
        """One prepared chunk: its local rejects journaled, its batches queued."""
        self.state.rows_read += rows_read
        if rejects:
            await self.journal.commit(Transition.local_rejects(self.step, rejects))
            skipped = {r.source_row for r in rejects if r.code == DUPLICATE_SKIPPED}
            local = len({r.source_row for r in rejects} - skipped)
            self.state.rejected_rows += local
            self.state.local_rejected_rows += local + len(skipped)
            self.state.duplicate_rows += len(skipped)
        for batch in batches:
            if self.stopping:
                return
            if await self._skip_done(batch):
                continue
            await self._admit(send, batch)
            if len(self._block) >= max(1, self.concurrency):
                await self._release(send)
        await self._release(send)
        self.show()

    async def _read_ahead(self, out: ObjectSendStream[Prepared], chunks: Iterator[Chunk]) -> None:
        def next_chunk() -> Prepared | None:
            chunk = next(chunks, None)
            if chunk is None:
                return None
            encoded, rejects, rows_read, counts = chunk
            if self.dedupe is not None:
                encoded, duplicates = self.dedupe.sift(encoded)
                rejects = rejects + duplicates
            return list(self.batcher.feed(encoded)), rejects, rows_read, counts

        async with out:
            while not self.stopping:
                prepared = await anyio.to_thread.run_sync(next_chunk)
                if prepared is None:
                    return
                try:
                    await out.send(prepared)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return  # the consumer stopped: the chunk is not needed

    async def _admit(self, send: MemoryObjectSendStream[Batch], batch: Batch) -> None:
        """Queue `batch` once no batch queued or in flight holds one of its keys."""
        gate = self.gate
        if gate is not None:
            if not gate.is_clear(batch.folded):
                await self._release(send)  # the holder may still be in this block
                await self._queue_committed(send)
                await gate.wait_clear(batch.folded)
            gate.hold(batch.folded)
        self._block.append(batch)

    async def _release(self, send: MemoryObjectSendStream[Batch]) -> None:
        """Journal the block IN_FLIGHT (one commit) and, once that is durable, hand it to
        the senders. Two blocks are under way: this one's commit is submitted before the
        previous block's is waited for and that block queued, so the journal's fsync
        overlaps the making of the next block (commits waited for one by one took 2.3 s
        of a 2.9 s import of 500k rows, and the senders found the queue empty a third of
        the time)."""
        if not self._block:
            return
        ready = self.journal.submit(*(Transition.begin(self.step, b.seq, b.rows, b.keys)
                                      for b in self._block))
        block, self._block = self._block, []
        await self._queue_committed(send)
        self._committing = block, ready

    async def _queue_committed(self, send: MemoryObjectSendStream[Batch]) -> None:
        """The released block, once its IN_FLIGHT is durable, to the senders."""
        if self._committing is None:
            return
        block, ready = self._committing
        await self.journal.durable(ready)
        self._committing = None
        for batch in block:
            try:  # room in the buffer: no trip round the event loop per batch
                send.send_nowait(batch)
            except anyio.WouldBlock:
                await send.send(batch)

    async def _skip_done(self, batch: Batch) -> bool:
        """True for a batch an earlier run finished (it must cover the same rows).

        Delta: its confirmed rows go to the state again (idempotent), in case the run
        stopped between the journal's DONE and the state's update."""
        record = self.done.get(batch.seq)
        if record is None or record.state is not BatchState.DONE:
            return False
        if record.rows != tuple(batch.rows):
            raise ConfigError(f"batch {batch.seq} of step {self.step} covers other rows than "
                              "when it was journaled; the input or the normalisation "
                              "changed: use a new checkpoint")
        self.state.done_rows += len(batch.rows)
        self.state.skipped_rows += len(batch.rows)
        if self.journal.state is not None:
            results = await self.journal.call(self.journal.checkpoint.results_of, self.step,
                                              batch.seq)
            self.journal.confirm(confirmed_rows(batch, results))
        self.show()
        return True

    # -- the senders --------------------------------------------------------------------

    async def _sender(self, receive: MemoryObjectReceiveStream[Batch]) -> None:
        async with receive:
            while (batch := await _next_batch(receive)) is not None:
                try:
                    if self.stopping:
                        self._unsent += 1  # drained unsent: the next run picks it up
                        continue
                    await self._process(batch)
                except QuotaExhausted as exc:
                    self.halt(str(exc), 4)
                except (RetryableApiError, TransportError) as exc:
                    self.halt(f"HubSpot unavailable after retries: {exc}", 4)
                finally:
                    if self.gate is not None:
                        self.gate.release(batch.folded)

    async def _process(self, batch: Batch) -> None:
        """Send a batch the producer journaled IN_FLIGHT; journal its outcome as DONE."""
        positions = list(range(len(batch.rows)))
        outcome = Sent()
        record = self.done.get(batch.seq)
        if (record is not None and record.state is BatchState.IN_FLIGHT
                and self.reconciler is not None):
            outcome, positions = await self.reconciler.reconcile(batch, positions,
                                                                 record.started_at)
        started = time.time() if record is None or record.started_at is None else min(
            time.time(), record.started_at)
        if positions:
            self.state.sent_rows += len(positions)
            outcome.merge(await self.sender.send(batch, positions, started))
        if outcome.rejects and self.names is not None:
            outcome.rejects = sourced(outcome.rejects, batch, self.names)
        self.journal.defer(Transition.finish(self.step, batch.seq, results=outcome.results,
                                             rejects=outcome.rejects, ids=outcome.ids),
                           confirmed_rows(batch, outcome.results)
                           if self.journal.state is not None else ())
        self.state.done_rows += len(batch.rows)
        if outcome.rejects:
            self.state.rejected_rows += len({r.source_row for r in outcome.rejects}
                                            - {r[0] for r in outcome.results})
        self.show()


async def _next_batch(receive: MemoryObjectReceiveStream[Batch]) -> Batch | None:
    """The next queued batch (None: the producer is done). A batch already queued is taken
    without a trip round the event loop: a sender's call yields there anyway, and the
    trip cost 6% of the import's main thread."""
    try:
        return receive.receive_nowait()
    except anyio.WouldBlock:
        pass
    except anyio.EndOfStream:
        return None
    try:
        return await receive.receive()
    except anyio.EndOfStream:
        return None


def confirmed_rows(batch: Batch, results: Sequence[tuple[int, str, str]]
                   ) -> list[tuple[str, str, str]]:
    """(folded key, id, input sent) of each row HubSpot confirmed: for the delta state."""
    if batch.folded is None or not results:
        return []
    at = {row: i for i, row in enumerate(batch.rows)}
    return [(batch.folded[at[row]], rid, batch.inputs[at[row]]) for row, rid, _ in results
            if row in at]
