"""Sending a batch's inputs and settling every row: write, bisect, conflicts, resends."""

from __future__ import annotations

from collections.abc import Sequence

from engine.batch import Batch, encode_body
from engine.client import HubSpotClient
from engine.errors import ApiError, FatalApiError, QuotaExhausted, RetryableApiError
from engine.imports.answers import Keys, Sent, read_answer, rejects_from
from engine.imports.plan import ImportSpec, KeyPlan, object_path
from engine.imports.reconcile import Reconciler

_TAILS = {"create": "batch/create", "update": "batch/update", "upsert": "batch/upsert"}


class BatchSender:
    """Sends inputs of a batch in the step's mode until every row is written or refused."""

    def __init__(self, client: HubSpotClient, spec: ImportSpec, keys: KeyPlan,
                 reconciler: Reconciler) -> None:
        self.client = client
        self.mode = spec.mode
        self.path = object_path(spec.object_type, _TAILS[spec.mode])
        self.keys = Keys(keys.key_column, keys.prop, spec.object_name, spec.record_ids)
        self.reconciler = reconciler

    async def send(self, batch: Batch, positions: Sequence[int], started: float,
                   ambiguous: bool = False) -> Sent:
        """Send these inputs of `batch`; bisect a batch that fails whole.

        `ambiguous`: an earlier attempt at these inputs may have landed unseen, so a
        create that now conflicts may be our own record (else it is someone else's).
        """
        try:
            response = await self.client.request("POST", self.path,
                                                 body=encode_body(batch.subset(positions)))
        except (FatalApiError, QuotaExhausted, RetryableApiError):
            raise
        except ApiError as exc:
            return await self._refused(batch, positions, started, exc, ambiguous or exc.ambiguous)
        ambiguous = ambiguous or response.ambiguous
        answer = read_answer(response.status, response.body, batch, positions, self.mode,
                             self.keys)
        out = answer.sent
        if answer.conflicts:
            out.merge(await self.reconciler.resolve_conflicts(
                batch, answer.conflicts, started, "already exists", maybe_ours=ambiguous))
        if answer.resend:
            out.merge(await self.send(batch, answer.resend, started, ambiguous))
        return out

    async def _refused(self, batch: Batch, positions: Sequence[int], started: float,
                       exc: ApiError, ambiguous: bool) -> Sent:
        """The whole call failed: halve it until the refused inputs are alone."""
        if len(positions) > 1:
            half = len(positions) // 2
            out = await self.send(batch, positions[:half], started, ambiguous)
            out.merge(await self.send(batch, positions[half:], started, ambiguous))
            return out
        if exc.status == 409 and self.mode == "create":
            return await self.reconciler.resolve_conflicts(batch, list(positions), started,
                                                           exc.message, maybe_ours=ambiguous)
        return Sent(rejects=rejects_from(batch.rows[positions[0]], exc.status, exc.category,
                                         exc.message, exc.errors))
