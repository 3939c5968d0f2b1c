"""The aiohttp application: routing, and one wrapper per API route for auth, limits, faults.

Order for an API request: auth (401) -> limits, counted on arrival (429) -> 5xx /
connection reset after the drawn latency, before any work -> the work, answered once the
drawn latency has passed since arrival (the work is part of it, as in HubSpot's own
response time) -> response lost after the work.
`/__sandbox/` routes need the bearer token too (they show records and change settings)
but skip the limits, the faults and the counters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from engine.sandbox import objects, pipelines, properties, search, v4
from engine.sandbox.audit import Stats, audit, parse_keys
from engine.sandbox.errors import ApiError, bad_request, correlation_id, error_body, unauthorized
from engine.sandbox.faults import HTML_502, Faults
from engine.sandbox.limits import Limits
from engine.sandbox.objects import Answer
from engine.sandbox.settings import RUNTIME_FIELDS, SandboxSettings
from engine.sandbox.store import ObjectStore, Portal
from engine.sandbox.validate import iso_from_ms

Work = Callable[["State", web.Request, Any], Answer]
JSON = "application/json"

_LIMIT_MESSAGES = {
    "TEN_SECONDLY_ROLLING": "You have reached your ten_secondly_rolling limit.",
    "SECONDLY": "You have reached your secondly limit.",
    "DAILY": "You have reached your daily limit.",
}


class State:
    """Everything one running sandbox holds."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.portal = Portal(lean=settings.lean)
        self.limits = Limits(settings)
        self.faults = Faults(settings.seed, settings.latency_ms, settings.fault_5xx,
                             settings.fault_reset, settings.fault_lost,
                             settings.search_latency_ms)
        self.stats = Stats()
        self.tokens = settings.tokens
        self.base_url = ""
        self.timer_late_s = 0.0009  # how late a sleep of ours ends, on average (learnt)

    async def sleep_until(self, at: float) -> None:
        """Sleep until monotonic time `at`, on average. A timer fires late: asyncio's
        selector rounds a timeout up to the next millisecond (0.9 ms late on average,
        measured here; uvloop 0.5 ms), which made every drawn latency that much longer.
        Each sleep aims early by the lateness seen so far (a moving average). Unlike the
        limiter's clock (`engine.ratelimit.AnyioClock`), which must never wake early and
        yields its last millisecond away, the sandbox only needs the drawn mean and spends
        no CPU waiting: it serves the client under test on the same cores."""
        aim = at - self.timer_late_s
        wait = aim - time.monotonic()
        if wait <= 0:
            return
        await asyncio.sleep(wait)
        self.timer_late_s += (time.monotonic() - aim - self.timer_late_s) / 32

    def configure(self, **changes: Any) -> SandboxSettings:
        unknown = set(changes) - RUNTIME_FIELDS
        if unknown:
            raise ValueError(f"cannot change at run time: {sorted(unknown)}")
        if "extra_tokens" in changes:
            changes["extra_tokens"] = tuple(changes["extra_tokens"])
        new = dataclasses.replace(self.settings, **changes)
        self.settings = new
        self.tokens = new.tokens
        self.limits.configure(new)
        self.faults.configure(latency_ms=new.latency_ms, fault_5xx=new.fault_5xx,
                              fault_reset=new.fault_reset, fault_lost=new.fault_lost,
                              seed=changes.get("seed"),
                              search_latency_ms=new.search_latency_ms)
        return new

    def reset(self, keep_schemas: bool = True) -> None:
        self.portal.reset(keep_schemas)
        self.limits.reset()
        self.stats.reset()
        self.faults.reset_counts()


STATE = web.AppKey("state", State)


def _json_response(status: int, payload: Any, headers: dict[str, str] | None = None
                   ) -> web.Response:
    if payload is None:
        return web.Response(status=status, headers=headers)
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return web.Response(body=body, status=status, content_type=JSON,
                        headers=headers)


def _limit_response(policy: str, headers: dict[str, str]) -> web.Response:
    body = {
        "status": "error",
        "message": _LIMIT_MESSAGES[policy],
        "errorType": "RATE_LIMIT",
        "correlationId": correlation_id(),
        "policyName": policy,
        "requestId": str(uuid.uuid4()),
    }
    return _json_response(429, body, headers)


def _five_xx_response(status: int) -> web.Response:
    if status == 502:
        return web.Response(body=HTML_502, status=502, content_type="text/html")
    message = "Service Unavailable" if status == 503 else "The request timed out"
    body = error_body(message, "SERVICE_UNAVAILABLE" if status == 503 else "GATEWAY_TIMEOUT")
    return _json_response(status, body)


def _drop_connection(request: web.Request) -> web.Response:
    """Abort the transport without answering; aiohttp then fails to write and moves on."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=499)


RawWork = Callable[[State, web.Request, bytes], Answer | None]


Handler = Callable[[web.Request], Awaitable[web.Response]]
URL_LIMIT = 8_000  # characters; HubSpot refuses longer URLs with 414 (list `properties`)
MAX_REQUEST_LINE = 64 * 1024  # what the server reads before giving up on a request line
HTML_414 = b"<html><head><title>414 Request-URI Too Large</title></head><body><center>" \
    b"<h1>414 Request-URI Too Large</h1></center></body></html>"


def api(work: Work, is_search: bool = False, raw_work: RawWork | None = None
        ) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A HubSpot API route: auth, limits and faults, then `work` on the decoded body.
    `raw_work` may answer from the body's bytes first (None: decode and call `work`)."""
    async def handler(request: web.Request) -> web.Response:
        state = request.app[STATE]
        stats = state.stats
        stats.requests += 1
        if len(request.raw_path) > URL_LIMIT:
            stats.statuses[414] += 1
            return web.Response(body=HTML_414, status=414, content_type="text/html")
        token = _bearer(request)
        if token not in state.tokens:
            error = unauthorized()
            stats.statuses[401] += 1
            return _json_response(error.status, error.body)
        arrived = time.monotonic()
        verdict = state.limits.check(token, arrived, is_search)
        if verdict.policy is not None:
            stats.statuses[429] += 1
            stats.rate_limited[verdict.policy] += 1
            return _limit_response(verdict.policy, verdict.headers)
        faults = state.faults
        lost = False
        answer_at = 0.0  # monotonic time the answer may leave (0: at once)
        if faults.active:
            draw = faults.draw(is_search, _route(request))
            answer_at = arrived + draw.delay_s
            if draw.five_xx is not None:
                await state.sleep_until(answer_at)
                stats.statuses[draw.five_xx] += 1
                return _five_xx_response(draw.five_xx)
            if draw.reset:
                await state.sleep_until(answer_at)
                return _drop_connection(request)
            lost = draw.lost
        try:
            body: Any = None
            raw: bytes | None = None
            answer: Answer | None = None
            if request.method in ("POST", "PATCH", "PUT") and request.can_read_body:
                raw = await request.read()
                if raw and raw_work is not None:
                    answer = raw_work(state, request, raw)
                if answer is None and raw:
                    try:
                        body = orjson.loads(raw)
                    except orjson.JSONDecodeError as exc:
                        raise bad_request(f"Invalid input JSON: {exc}") from None
            stats.count_call(f"{request.method} {request.path}", _inputs_of(body, raw)
                             if request.method == "POST" else 1)
            status, payload = work(state, request, body) if answer is None else answer
        except ApiError as exc:
            status, payload = exc.status, exc.body
        response = None if lost else _json_response(status, payload, verdict.headers)
        if answer_at:
            await state.sleep_until(answer_at)
        if response is None:
            return _drop_connection(request)
        stats.statuses[status] += 1
        return response

    return handler


def _inputs_of(body: Any, raw: bytes | None) -> int:
    """Inputs of a batch call (its `inputs` list), 1 for any other call; a body answered
    from its bytes (batch create) counts its `"properties"` keys, one per input."""
    if isinstance(body, dict):
        inputs = body.get("inputs")
        return len(inputs) if isinstance(inputs, list) else 1
    return raw.count(b'"properties"') if raw else 1


def _route(request: web.Request) -> str:
    """The request's route (method and path pattern), naming its latency's jitter stream."""
    info = request.match_info.route.resource
    return f"{request.method} {info.canonical if info is not None else request.path}"


def _bearer(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


# --- API routes ---------------------------------------------------------------------------


def _store(state: State, request: web.Request, key: str = "type") -> ObjectStore:
    return state.portal.store(request.match_info[key])


def _batch(state: State, request: web.Request, body: Any) -> Answer:
    store = _store(state, request)
    op = request.match_info["op"]
    if op == "create":
        return objects.batch_create(store, body)
    if op == "update":
        return objects.batch_update(store, body)
    if op == "upsert":
        return objects.batch_upsert(store, body)
    if op == "read":
        return objects.batch_read(store, body, request.query.get("archived") == "true")
    if op == "archive":
        return objects.batch_archive(store, body)
    raise ApiError(404, error_body(f"Unknown batch operation {op}", "OBJECT_NOT_FOUND"))


def _batch_raw(state: State, request: web.Request, raw: bytes) -> Answer | None:
    if request.match_info["op"] != "create":
        return None
    return objects.batch_create_raw(_store(state, request), raw)


def _search(state: State, request: web.Request, body: Any) -> Answer:
    return search.search(_store(state, request), body)


def _list(state: State, request: web.Request, body: Any) -> Answer:
    return objects.list_page(_store(state, request), dict(request.query), state.base_url,
                             request.path)


def _create(state: State, request: web.Request, body: Any) -> Answer:
    return objects.create_one(_store(state, request), body)


def _get(state: State, request: web.Request, body: Any) -> Answer:
    return objects.get_one(_store(state, request), request.match_info["id"],
                           dict(request.query))


def _patch(state: State, request: web.Request, body: Any) -> Answer:
    return objects.update_one(_store(state, request), request.match_info["id"],
                              dict(request.query), body)


def _delete(state: State, request: web.Request, body: Any) -> Answer:
    return objects.archive_one(_store(state, request), request.match_info["id"])


def _properties(state: State, request: web.Request, body: Any) -> Answer:
    store = _store(state, request)
    if request.method == "POST":
        return properties.create_property(store, body)
    return properties.list_properties(store)


def _property(state: State, request: web.Request, body: Any) -> Answer:
    return properties.get_property(_store(state, request), request.match_info["name"])


def _schemas(state: State, request: web.Request, body: Any) -> Answer:
    if request.method == "POST":
        return properties.create_schema(state.portal, body)
    return properties.list_schemas(state.portal)


def _schema(state: State, request: web.Request, body: Any) -> Answer:
    return properties.get_schema(state.portal, request.match_info["type"])


def _labels(state: State, request: web.Request, body: Any) -> Answer:
    frm, to = _store(state, request, "from"), _store(state, request, "to")
    if request.method == "POST":
        return v4.create_label(state.portal, frm, to, body)
    return v4.list_labels(state.portal, frm, to)


def _label(state: State, request: web.Request, body: Any) -> Answer:
    frm, to = _store(state, request, "from"), _store(state, request, "to")
    return v4.delete_label(state.portal, frm, to, request.match_info["type_id"])


def _assoc_batch(state: State, request: web.Request, body: Any) -> Answer:
    frm, to = _store(state, request, "from"), _store(state, request, "to")
    op = request.match_info["op"]
    limit = state.settings.association_batch_limit
    portal = state.portal
    if op == "create":
        return v4.batch_create(portal, frm, to, body, limit)
    if op == "associate/default":
        return v4.batch_default(portal, frm, to, body, limit)
    if op == "read":
        return v4.batch_read(portal, frm, to, body)
    if op == "archive":
        return v4.batch_archive(portal, frm, to, body, limit)
    if op == "labels/archive":
        return v4.batch_archive_labels(portal, frm, to, body, limit)
    raise ApiError(404, error_body(f"Unknown batch operation {op}", "OBJECT_NOT_FOUND"))


# --- audit routes (auth, but no limits, no faults, not counted) ---------------------------


def _audit_call(fn: Callable[[State, web.Request, Any], Answer]
                ) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        state = request.app[STATE]
        if _bearer(request) not in state.tokens:
            error = unauthorized()
            return _json_response(error.status, error.body)
        body: Any = None
        if request.method == "POST" and request.can_read_body:
            raw = await request.read()
            body = orjson.loads(raw) if raw else None
        try:
            status, payload = fn(state, request, body)
        except (ApiError, ValueError, TypeError) as exc:
            error = exc if isinstance(exc, ApiError) else bad_request(str(exc))
            status, payload = error.status, error.body
        return _json_response(status, payload)

    return handler


def audit_report(state: State, keys: str | None = None) -> dict[str, Any]:
    return audit(state.portal, state.limits, state.faults, state.stats, parse_keys(keys))


def records_dump(state: State, type_name: str, archived: bool = False) -> list[dict[str, Any]]:
    store = state.portal.store(type_name)
    return [
        {"id": str(r.id), "properties": dict(r.props), "createdAt": iso_from_ms(r.created_ms),
         "archived": r.archived_ms is not None}
        for r in store.records.values() if archived or r.archived_ms is None
    ]


def edges_dump(state: State, from_name: str, to_name: str) -> list[dict[str, Any]]:
    portal = state.portal
    frm, to = portal.store(from_name), portal.store(to_name)
    types = portal.associations.types
    return [
        {"fromId": str(a), "toId": str(b), "typeId": t, "category": types[t].category,
         "label": types[t].label}
        for a, b, t in sorted(portal.associations.iter_edges(frm.type_id, to.type_id))
    ]


def _audit(state: State, request: web.Request, body: Any) -> Answer:
    return 200, audit_report(state, request.query.get("keys"))


def _records(state: State, request: web.Request, body: Any) -> Answer:
    archived = request.query.get("archived") == "true"
    return 200, {"results": records_dump(state, request.match_info["type"], archived)}


def _edges(state: State, request: web.Request, body: Any) -> Answer:
    return 200, {"results": edges_dump(state, request.match_info["from"],
                                       request.match_info["to"])}


def _reset(state: State, request: web.Request, body: Any) -> Answer:
    keep = request.query.get("keep_schemas", "true") != "false"
    if isinstance(body, dict) and "keep_schemas" in body:
        keep = bool(body["keep_schemas"])
    state.reset(keep_schemas=keep)
    return 200, {"reset": True, "keep_schemas": keep}


def _config(state: State, request: web.Request, body: Any) -> Answer:
    if request.method == "POST":
        if not isinstance(body, dict):
            raise bad_request("expected a JSON object of settings")
        state.configure(**body)
    settings = dataclasses.asdict(state.settings)
    settings.pop("token", None)
    settings.pop("extra_tokens", None)
    return 200, settings


def build_app(state: State) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = state
    r = app.router
    objs = "/crm/v3/objects/{type}"
    v4_base = "/crm/v4/associations/{from}/{to}"
    _resource(r, objs + "/batch/{op}", post=api(_batch, raw_work=_batch_raw))
    _resource(r, objs + "/search", post=api(_search, is_search=True))
    _resource(r, objs, get=api(_list), post=api(_create))
    _resource(r, objs + "/{id}", get=api(_get), patch=api(_patch), delete=api(_delete))
    _resource(r, "/crm/v3/properties/{type}", get=api(_properties), post=api(_properties))
    _resource(r, "/crm/v3/properties/{type}/{name}", get=api(_property))
    _resource(r, "/crm/v3/schemas", get=api(_schemas), post=api(_schemas))
    _resource(r, "/crm/v3/schemas/{type}", get=api(_schema))
    _resource(r, v4_base + "/labels", get=api(_labels), post=api(_labels))
    _resource(r, v4_base + "/labels/{type_id}", delete=api(_label))
    _resource(r, v4_base + "/batch/{op:.+}", post=api(_assoc_batch))
    _resource(r, "/crm/v3/owners", get=api(pipelines.owners_route))
    _resource(r, "/crm/v3/owners/", get=api(pipelines.owners_route))  # the official client's
    _resource(r, "/crm/v3/owners/{owner_id}", get=api(pipelines.owner_route))
    _resource(r, "/crm/v3/pipelines/{type}", get=api(pipelines.pipelines_route))
    _resource(r, "/crm/v3/pipelines/{type}/{pipeline_id}", get=api(pipelines.pipeline_route))
    _resource(r, "/crm/v3/pipelines/{type}/{pipeline_id}/stages",
              get=api(pipelines.stages_route))
    _resource(r, "/__sandbox/audit", get=_audit_call(_audit))
    _resource(r, "/__sandbox/records/{type}", get=_audit_call(_records))
    _resource(r, "/__sandbox/associations/{from}/{to}", get=_audit_call(_edges))
    _resource(r, "/__sandbox/reset", post=_audit_call(_reset))
    _resource(r, "/__sandbox/config", get=_audit_call(_config), post=_audit_call(_config))
    return app


def _resource(router: web.UrlDispatcher, path: str, *, get: Handler | None = None,
              post: Handler | None = None, patch: Handler | None = None,
              delete: Handler | None = None) -> None:
    """Route the given methods of one path (GET also answers HEAD, as `add_get` does)."""
    if get is not None:
        router.add_get(path, get)
    for method, handler in (("POST", post), ("PATCH", patch), ("DELETE", delete)):
        if handler is not None:
            router.add_route(method, path, handler)
