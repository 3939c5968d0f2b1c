"""Owners (`/crm/v3/owners`) and pipelines (`/crm/v3/pipelines/{objectType}`): seeded, read-only.

A fresh portal's directory, as HubSpot's guides describe it: owners are the users records are
assigned to ("votre valeur doit être l'élément id du propriétaire de l'utilisateur, que vous
pouvez trouver ... via l'API des propriétaires"), and deals and tickets move through the
stages of a pipeline ("you can track deals through a sales processes or tickets through
support statuses"). Two owners share a name (names are not unique, e-mails and ids are);
the second deal pipeline reuses the default's stage labels with its own numeric stage ids.

The directory is immutable: the sandbox offers no write endpoints for it, so one seeded
`DIRECTORY` serves every portal, and a reset leaves it as it is. The record validation that
uses it lives in `validate.check_directory`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from engine.sandbox.errors import bad_request, not_found

if TYPE_CHECKING:
    from aiohttp import web

    from engine.sandbox.server import State

Answer = tuple[int, Any]

MAX_OWNERS_LIMIT = 500
DEFAULT_OWNERS_LIMIT = 100
_SEEDED_AT = "2023-03-01T09:00:00.000Z"


@dataclass(frozen=True, slots=True)
class Owner:
    """One owner as `GET /crm/v3/owners` describes it (a PERSON, active)."""

    id: str
    email: str
    first_name: str
    last_name: str
    user_id: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "email": self.email, "type": "PERSON",
            "firstName": self.first_name, "lastName": self.last_name,
            "userId": self.user_id, "userIdIncludingInactive": self.user_id,
            "createdAt": _SEEDED_AT, "updatedAt": _SEEDED_AT, "archived": False, "teams": [],
        }


@dataclass(frozen=True, slots=True)
class Stage:
    id: str
    label: str
    display_order: int
    metadata: tuple[tuple[str, str], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "label": self.label, "displayOrder": self.display_order,
            "metadata": dict(self.metadata), "archived": False,
            "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
            "createdAt": _SEEDED_AT, "updatedAt": _SEEDED_AT,
        }


@dataclass(frozen=True, slots=True)
class Pipeline:
    id: str
    label: str
    display_order: int
    stages: tuple[Stage, ...]

    def stage_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.stages)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "label": self.label, "displayOrder": self.display_order,
            "stages": [s.to_json() for s in self.stages], "archived": False,
            "createdAt": _SEEDED_AT, "updatedAt": _SEEDED_AT,
        }


@dataclass(frozen=True, slots=True)
class Directory:
    """A portal's owners and its pipelines per object type name."""

    owners: tuple[Owner, ...]
    pipelines: Mapping[str, tuple[Pipeline, ...]]

    def is_owner(self, owner_id: str) -> bool:
        return any(o.id == owner_id for o in self.owners)

    def pipeline(self, object_name: str, pipeline_id: str) -> Pipeline | None:
        return next((p for p in self.pipelines.get(object_name, ())
                     if p.id == pipeline_id), None)

    def default_pipeline(self, object_name: str) -> Pipeline | None:
        """Deals: the pipeline `default`; others: the one with the lowest displayOrder."""
        pipelines = self.pipelines.get(object_name, ())
        if not pipelines:
            return None
        named = self.pipeline(object_name, "default") if object_name == "deals" else None
        return named or min(pipelines, key=lambda p: p.display_order)

    def pipeline_ids(self, object_name: str) -> tuple[str, ...]:
        return tuple(p.id for p in self.pipelines.get(object_name, ()))


def _deal_stage(stage_id: str, label: str, order: int, probability: str) -> Stage:
    closed = "true" if probability in ("0.0", "1.0") else "false"
    return Stage(stage_id, label, order, (("isClosed", closed), ("probability", probability)))


def _ticket_stage(stage_id: str, label: str, order: int, state: str) -> Stage:
    closed = "true" if state == "CLOSED" else "false"
    return Stage(stage_id, label, order, (("isClosed", closed), ("ticketState", state)))


def seeded_directory() -> Directory:
    """The owners and pipelines of a fresh sandbox portal."""
    owners = (
        Owner("41629779", "alice.martin@example.com", "Alice", "Martin", 9_001_001),
        Owner("52384011", "bruno.keller@example.com", "Bruno", "Keller", 9_001_002),
        Owner("60017342", "jordan.lee@example.com", "Jordan", "Lee", 9_001_003),
        Owner("60017343", "jordan.lee@example.org", "Jordan", "Lee", 9_001_004),
        Owner("118273645", "chloe.dubois@example.com", "Chloé", "Dubois", 9_001_005),
    )
    sales = Pipeline("default", "Sales Pipeline", 0, (
        _deal_stage("appointmentscheduled", "Appointment Scheduled", 0, "0.2"),
        _deal_stage("qualifiedtobuy", "Qualified To Buy", 1, "0.4"),
        _deal_stage("presentationscheduled", "Presentation Scheduled", 2, "0.6"),
        _deal_stage("decisionmakerboughtin", "Decision Maker Bought-In", 3, "0.8"),
        _deal_stage("contractsent", "Contract Sent", 4, "0.9"),
        _deal_stage("closedwon", "Closed Won", 5, "1.0"),
        _deal_stage("closedlost", "Closed Lost", 6, "0.0"),
    ))
    renewals = Pipeline("87123456", "Renewals", 1, (
        _deal_stage("87123457", "Renewal Due", 0, "0.5"),
        _deal_stage("87123458", "Negotiation", 1, "0.7"),
        _deal_stage("87123459", "Closed Won", 2, "1.0"),
        _deal_stage("87123460", "Closed Lost", 3, "0.0"),
    ))
    support = Pipeline("0", "Support Pipeline", 0, (
        _ticket_stage("1", "New", 0, "OPEN"),
        _ticket_stage("2", "Waiting on contact", 1, "OPEN"),
        _ticket_stage("3", "Waiting on us", 2, "OPEN"),
        _ticket_stage("4", "Closed", 3, "CLOSED"),
    ))
    return Directory(owners, MappingProxyType({"deals": (sales, renewals),
                                               "tickets": (support,)}))


DIRECTORY = seeded_directory()


# --- owners ---------------------------------------------------------------------------


def owners_page(directory: Directory, query: Mapping[str, str]) -> Answer:
    """`GET /crm/v3/owners?limit=&after=&email=&archived=`: owners by id, paged."""
    try:
        limit = int(query.get("limit") or DEFAULT_OWNERS_LIMIT)
        start = int(query.get("after") or 0)
    except ValueError:
        raise bad_request("limit and after must be integers") from None
    if not 1 <= limit <= MAX_OWNERS_LIMIT:
        raise bad_request(f"limit must be between 1 and {MAX_OWNERS_LIMIT}")
    owners = [] if query.get("archived") == "true" else list(directory.owners)
    email = (query.get("email") or "").strip().lower()
    if email:
        owners = [o for o in owners if o.email.lower() == email]
    page = owners[start:start + limit]
    body: dict[str, Any] = {"results": [o.to_json() for o in page]}
    if start + limit < len(owners):
        body["paging"] = {"next": {"after": str(start + limit)}}
    return 200, body


def owner_one(directory: Directory, owner_id: str, query: Mapping[str, str]) -> Answer:
    """`GET /crm/v3/owners/{ownerId}?idProperty=id|userId`."""
    by_user = query.get("idProperty") == "userId"
    for owner in () if query.get("archived") == "true" else directory.owners:
        if (str(owner.user_id) if by_user else owner.id) == owner_id:
            return 200, owner.to_json()
    raise not_found(f"No owner with {'userId' if by_user else 'id'} {owner_id}")


# --- pipelines ------------------------------------------------------------------------


def pipelines_of(directory: Directory, object_name: str) -> Answer:
    """`GET /crm/v3/pipelines/{objectType}`: every pipeline with its stages."""
    return 200, {"results": [p.to_json() for p in directory.pipelines.get(object_name, ())]}


def pipeline_one(directory: Directory, object_name: str, pipeline_id: str) -> Answer:
    return 200, _found(directory, object_name, pipeline_id).to_json()


def stages_of(directory: Directory, object_name: str, pipeline_id: str) -> Answer:
    pipeline = _found(directory, object_name, pipeline_id)
    return 200, {"results": [s.to_json() for s in pipeline.stages]}


def _found(directory: Directory, object_name: str, pipeline_id: str) -> Pipeline:
    pipeline = directory.pipeline(object_name, pipeline_id)
    if pipeline is None:
        raise not_found(f"Unable to find pipeline {pipeline_id} for object type {object_name}")
    return pipeline


# --- routes (server.build_app registers them) -----------------------------------------


def owners_route(state: State, request: web.Request, body: Any) -> Answer:
    return owners_page(DIRECTORY, request.query)


def owner_route(state: State, request: web.Request, body: Any) -> Answer:
    return owner_one(DIRECTORY, request.match_info["owner_id"], request.query)


def _object_name(state: State, request: web.Request) -> str:
    """The object type of the path by name or type id (`deals`, `0-3`)."""
    return state.portal.store(request.match_info["type"]).otype.name


def pipelines_route(state: State, request: web.Request, body: Any) -> Answer:
    return pipelines_of(DIRECTORY, _object_name(state, request))


def pipeline_route(state: State, request: web.Request, body: Any) -> Answer:
    return pipeline_one(DIRECTORY, _object_name(state, request),
                        request.match_info["pipeline_id"])


def stages_route(state: State, request: web.Request, body: Any) -> Answer:
    return stages_of(DIRECTORY, _object_name(state, request), request.match_info["pipeline_id"])
