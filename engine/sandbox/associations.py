"""Associations v4: type ids and labels per object pair, and symmetric edge storage.

Every edge is stored twice, once from each side, with the inverse type id on the other side,
so it reads the same from both ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

FIRST_USER_TYPE_ID = 1000
MAX_LABELS_PER_PAIR = 10
COMPANY = "0-2"
UNASSOCIABLE = {"0-7": "Products", "0-115": "Users"}  # the CRM overview guide


@dataclass(frozen=True, slots=True)
class AssociationType:
    type_id: int
    from_type: str  # object type id, e.g. "0-1"
    to_type: str
    category: str  # HUBSPOT_DEFINED | USER_DEFINED
    label: str | None
    inverse_id: int
    name: str = ""

    def spec(self) -> dict[str, object]:
        return {"category": self.category, "typeId": self.type_id, "label": self.label}


# (from, to, type id, inverse type id, label, is the pair default (unlabeled)), HUBSPOT_API.md
_HUBSPOT_DEFINED: list[tuple[str, str, int, int, str | None, bool]] = [
    ("0-1", "0-2", 1, 2, "Primary", False),
    ("0-1", "0-2", 279, 280, None, True),
    ("0-3", "0-1", 3, 4, None, True),
    ("0-3", "0-2", 5, 6, "Primary", False),
    ("0-3", "0-2", 341, 342, None, True),
    ("0-2", "0-2", 13, 14, "Parent Company", False),
    ("0-2", "0-2", 450, 450, None, True),
    ("0-1", "0-5", 15, 16, None, True),
    ("0-3", "0-8", 19, 20, None, True),
    ("0-2", "0-5", 25, 26, "Primary", False),
    ("0-2", "0-5", 340, 339, None, True),
    ("0-3", "0-5", 27, 28, None, True),
    ("0-1", "0-46", 201, 202, None, True),
    ("0-2", "0-46", 189, 190, None, True),
    ("0-3", "0-46", 213, 214, None, True),
    ("0-5", "0-46", 227, 228, None, True),
    ("0-1", "0-1", 449, 449, None, True),
]
_INVERSE_LABEL = {13: "Child Company", 14: "Parent Company"}


def check_label_name(name: str) -> None:
    """The associations guide on a label's `name`: "Cette valeur ne peut pas comprendre de
    traits d'union ni commencer par un caractère numérique." (ValueError: a 400)."""
    if "-" in name or name[:1].isdigit():
        raise ValueError(
            f"Invalid association label name {name!r}: the name cannot contain hyphens "
            "or start with a number"
        )


def check_pair(frm: str, to: str) -> None:
    """Objects that the CRM overview says cannot be associated (ValueError: a 400):
    "Les produits ne peuvent pas être associés à d'autres objets", nor can users."""
    for side in (frm, to):
        if side in UNASSOCIABLE:
            raise ValueError(
                f"{UNASSOCIABLE[side]} cannot be associated with other objects "
                f"({frm} to {to} is not a valid association)"
            )


class AssociationStore:
    """Type registry and edges: edges[(from_type, to_type)][from_id][to_id] = {type ids}."""

    def __init__(self) -> None:
        self.types: dict[int, AssociationType] = {}
        self.defaults: dict[tuple[str, str], int] = {}
        self.edges: dict[tuple[str, str], dict[int, dict[int, set[int]]]] = {}
        # Primary company types -> whether the record that has the primary company is on
        # the `from` side (contact->company 1) or the `to` side (company->contact 2).
        self.primary: dict[int, bool] = {}
        self._next_id = FIRST_USER_TYPE_ID
        for frm, to, tid, inv, label, is_default in _HUBSPOT_DEFINED:
            self._register(AssociationType(tid, frm, to, "HUBSPOT_DEFINED", label, inv))
            inv_label = _INVERSE_LABEL.get(tid, label)
            if inv != tid:
                self._register(AssociationType(inv, to, frm, "HUBSPOT_DEFINED", inv_label, tid))
            if is_default:
                self.defaults[(frm, to)] = tid
                self.defaults[(to, frm)] = inv

    def _register(self, atype: AssociationType) -> None:
        self.types[atype.type_id] = atype
        if atype.category == "HUBSPOT_DEFINED" and atype.label == "Primary":
            self.primary[atype.type_id] = atype.to_type == COMPANY

    def _allocate(self) -> int:
        tid = self._next_id
        self._next_id += 1
        return tid

    # --- types and labels -------------------------------------------------------------

    def default_type(self, frm: str, to: str) -> int:
        """The unlabeled type id of a pair; pairs HubSpot does not define get one on demand."""
        tid = self.defaults.get((frm, to))
        if tid is None:
            tid, inv = self._allocate(), self._allocate()
            if frm == to:
                inv = tid
            self._register(AssociationType(tid, frm, to, "HUBSPOT_DEFINED", None, inv))
            self._register(AssociationType(inv, to, frm, "HUBSPOT_DEFINED", None, tid))
            self.defaults[(frm, to)] = tid
            self.defaults[(to, frm)] = inv
        return tid

    def labels(self, frm: str, to: str) -> list[AssociationType]:
        self.default_type(frm, to)
        return [t for t in self.types.values() if t.from_type == frm and t.to_type == to]

    def create_label(
        self, frm: str, to: str, name: str, label: str, inverse_label: str | None
    ) -> list[AssociationType]:
        """A user label: one type id per direction; the answer lists the paired ones."""
        check_label_name(name)
        existing = {t.name for t in self.labels(frm, to) if t.category == "USER_DEFINED"}
        if name in existing:
            raise ValueError(f"An association label named {name} already exists")
        if len(existing) >= MAX_LABELS_PER_PAIR:
            raise ValueError(f"At most {MAX_LABELS_PER_PAIR} labels per object pair")
        tid, inv = self._allocate(), self._allocate()
        forward = AssociationType(tid, frm, to, "USER_DEFINED", label, inv, name)
        back = AssociationType(inv, to, frm, "USER_DEFINED", inverse_label or label, tid, name)
        self._register(forward)
        self._register(back)
        return [forward, back] if inverse_label else [forward]

    def archive_label(self, frm: str, to: str, type_id: int) -> bool:
        atype = self.types.get(type_id)
        if (
            atype is None
            or atype.category != "USER_DEFINED"
            or (atype.from_type, atype.to_type) != (frm, to)
        ):
            return False
        for tid in (type_id, atype.inverse_id):
            del self.types[tid]
        for pair in ((frm, to), (to, frm)):
            for targets in self.edges.get(pair, {}).values():
                for types in targets.values():
                    types.discard(type_id)
                    types.discard(atype.inverse_id)
        return True

    # --- edges ------------------------------------------------------------------------

    def add(self, frm: str, from_id: int, to: str, to_id: int, type_id: int) -> None:
        """Add one typed edge (idempotent), readable from both sides."""
        inverse = self.types[type_id].inverse_id
        holder_is_from = self.primary.get(type_id)
        if holder_is_from is not None:
            if holder_is_from:
                self._demote_primary(frm, from_id, to, to_id, type_id)
            else:
                self._demote_primary(to, to_id, frm, from_id, inverse)
        forward = self.edges.setdefault((frm, to), {}).setdefault(from_id, {})
        forward.setdefault(to_id, set()).add(type_id)
        back = self.edges.setdefault((to, frm), {}).setdefault(to_id, {})
        back.setdefault(from_id, set()).add(inverse)

    def _demote_primary(self, frm: str, from_id: int, company: str, company_id: int,
                        primary: int) -> None:
        """A record has one primary company (the associations guide: "une seule peut être
        l'entreprise principale"): the one it had becomes an unlabeled association."""
        targets = self.edges.get((frm, company), {}).get(from_id, {})
        for old in [c for c, types in targets.items() if primary in types and c != company_id]:
            self.remove(frm, from_id, company, old, {primary})
            self.add(frm, from_id, company, old, self.default_type(frm, company))

    def remove(
        self, frm: str, from_id: int, to: str, to_id: int, type_ids: set[int] | None = None
    ) -> None:
        """Remove some (or all) types of an edge from both sides."""
        for a, a_id, b, b_id, flip in ((frm, from_id, to, to_id, False),
                                       (to, to_id, frm, from_id, True)):
            targets = self.edges.get((a, b), {}).get(a_id)
            if not targets or b_id not in targets:
                continue
            if type_ids is None:
                del targets[b_id]
            else:
                drop = {self.types[t].inverse_id for t in type_ids} if flip else type_ids
                targets[b_id] -= drop
                if not targets[b_id]:
                    del targets[b_id]
            if not targets:
                del self.edges[(a, b)][a_id]

    def targets(self, frm: str, to: str, from_id: int) -> dict[int, set[int]]:
        return self.edges.get((frm, to), {}).get(from_id, {})

    def drop_object(self, type_id: str, object_id: int) -> None:
        """Remove every edge of an archived record."""
        for (frm, to), by_from in list(self.edges.items()):
            if frm == type_id and object_id in by_from:
                for to_id in list(by_from[object_id]):
                    self.remove(frm, object_id, to, to_id)

    def iter_edges(self, frm: str, to: str) -> Iterator[tuple[int, int, int]]:
        for from_id, targets in self.edges.get((frm, to), {}).items():
            for to_id, types in targets.items():
                for tid in types:
                    yield from_id, to_id, tid

    def clear_edges(self) -> None:
        self.edges.clear()
