"""What the sandbox saw and holds: counts, duplicates, statuses, faults, the busiest window.

Tokens appear only as fingerprints (`token_fingerprint`): the report is no way to learn
the tokens the sandbox accepts.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from engine.sandbox.errors import bad_request
from engine.sandbox.faults import Faults
from engine.sandbox.limits import Limits
from engine.sandbox.store import ObjectStore, Portal, unique_key

MAX_EXAMPLES = 10


@dataclass(slots=True)
class Stats:
    """Request counters kept by the server."""

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    rate_limited: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)  # "POST /crm/..." -> calls worked
    inputs: Counter[str] = field(default_factory=Counter)  # ... -> their batch inputs

    def reset(self) -> None:
        self.requests = 0
        self.statuses.clear()
        self.rate_limited.clear()
        self.calls.clear()
        self.inputs.clear()

    def count_call(self, route: str, inputs: int) -> None:
        """A call that reached its work (not refused by a limit or a fault)."""
        self.calls[route] += 1
        self.inputs[route] += inputs


def token_fingerprint(token: str) -> str:
    """A short, stable stand-in for a token in reports: `sha256:` and 12 hex digits."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def parse_keys(spec: str | None) -> list[tuple[str, str]]:
    """`contacts:email,deals:legacy_deal_id` -> [("contacts", "email"), ...]."""
    if not spec:
        return []
    out = []
    for part in spec.split(","):
        obj, sep, prop = part.strip().partition(":")
        if not sep or not obj or not prop:
            raise bad_request(f"keys must look like object:property, got {part!r}")
        out.append((obj, prop))
    return out


def duplicates(store: ObjectStore, prop: str) -> dict[str, Any]:
    """Live records sharing a value of `prop` (unique properties compare case-insensitively)."""
    fold = prop in store.unique
    holders: dict[str, list[int]] = {}
    for rec in store.live():
        value = rec.props.get(prop)
        if value:
            holders.setdefault(unique_key(value) if fold else value, []).append(rec.id)
    dups = {v: ids for v, ids in holders.items() if len(ids) > 1}
    return {
        "values": len(dups),
        "extra_records": sum(len(ids) - 1 for ids in dups.values()),
        "examples": {v: [str(i) for i in ids] for v, ids in list(dups.items())[:MAX_EXAMPLES]},
    }


def audit(portal: Portal, limits: Limits, faults: Faults, stats: Stats,
          keys: list[tuple[str, str]]) -> dict[str, Any]:
    records: dict[str, Any] = {}
    dup_report: dict[str, Any] = {}
    for store in portal.stores.values():
        live = sum(1 for r in store.records.values() if r.archived_ms is None)
        records[store.otype.name] = {
            "typeId": store.type_id,
            "live": live,
            "archived": len(store.records) - live,
        }
        for prop in store.unique:
            dup_report[f"{store.otype.name}:{prop}"] = duplicates(store, prop)
    for obj, prop in keys:
        store = portal.store(obj)
        dup_report[f"{store.otype.name}:{prop}"] = duplicates(store, prop)

    edges: dict[str, Any] = {}
    names = {s.type_id: s.otype.name for s in portal.stores.values()}
    for (frm, to), by_from in portal.associations.edges.items():
        by_type: Counter[int] = Counter()
        pairs = 0
        for targets in by_from.values():
            pairs += len(targets)
            for types in targets.values():
                by_type.update(types)
        if pairs:
            edges[f"{names.get(frm, frm)}->{names.get(to, to)}"] = {
                "records_pairs": pairs,
                "by_type": {str(t): n for t, n in sorted(by_type.items())},
            }

    by_token = {token_fingerprint(t): n for t, n in limits.max_accepted_in_window().items()}
    return {
        "records": records,
        "associations": edges,
        "duplicates": dup_report,
        "requests": stats.requests,
        "statuses": {str(s): n for s, n in sorted(stats.statuses.items())},
        "calls": {route: {"calls": n, "inputs": stats.inputs[route]}
                  for route, n in sorted(stats.calls.items())},
        "http_429": stats.statuses.get(429, 0),
        "rate_limited": dict(stats.rate_limited),
        "faults": dict(faults.injected),
        "window": {
            "limit": limits.rate_requests or None,
            "window_s": limits.rate_window_s,
            "max_accepted_in_any_window": max(by_token.values(), default=0),
            "by_token": by_token,
        },
        "daily_used": {token_fingerprint(t): u.daily_used for t, u in limits.usage.items()},
    }
