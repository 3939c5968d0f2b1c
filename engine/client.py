"""The one HTTP client through which every HubSpot call goes.

aiohttp is used here and nowhere else on the client side: `AiohttpTransport.send` is the
one boundary where aiohttp errors become `TransportError`s. `HubSpotClient.request`
adds auth, base-URL rules, the shared limiters, classification and retries. Tests swap
the transport for a `MockTransport(handler)`.

The access token lives in a `Secret`; it goes into the Authorization header and nowhere
else. Every body is scrubbed of it here, before any caller sees it, so no exception, log
line, rejects file, journal or report can carry it even when a server echoes request
headers back (in an error or in a 207's per-input messages).
"""

from __future__ import annotations

import inspect
import logging
import random
import re
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import anyio
import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from engine import __version__
from engine.config import ClientSettings, Secret
from engine.errors import (
    ApiError,
    ConnectError,
    RequestTimeout,
    RetryableApiError,
    TransportError,
)
from engine.ratelimit import (
    AnyioClock,
    Clock,
    Limiter,
    RollingWindowLimiter,
    Unlimited,
    first_window_in_flight,
)
from engine.retry import RetryBudget, Verdict, backoff_s, classify, error_for

log = logging.getLogger("hsbulk.client")

Params = Mapping[str, str | int]


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None
    params: Params | None = None


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes
    # An earlier attempt of this call may have been carried out although its answer was
    # lost (a dropped connection, a timeout, a 5xx): a create may already have landed.
    ambiguous: bool = False

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


class Transport(Protocol):
    async def send(self, request: Request) -> Response: ...

    async def aclose(self) -> None: ...


class AiohttpTransport:
    """One `aiohttp.ClientSession` per run: no redirects, no proxy env, socket timeouts."""

    def __init__(self, *, connect_timeout_s: float, read_timeout_s: float, limit: int) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s
        )
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    def _session_nowait(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300),
                timeout=self._timeout,
                trust_env=False,
                raise_for_status=False,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def send(self, request: Request) -> Response:
        session = self._session_nowait()
        target = request.url.split("?", 1)[0]
        try:
            async with session.request(
                request.method,
                request.url,
                params=request.params,
                data=request.body,
                headers=request.headers,
                allow_redirects=False,
            ) as answer:
                body = await answer.read()
                return Response(answer.status, answer.headers, body)
        # aiohttp.ServerTimeoutError is also a ClientConnectionError: timeouts first.
        except TimeoutError:
            raise RequestTimeout(f"{request.method} {target}: no response in time") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise ConnectError(
                f"{request.method} {target}: connection failed ({type(exc).__name__})"
            ) from None
        except aiohttp.ClientError as exc:
            raise TransportError(
                f"{request.method} {target}: request failed ({type(exc).__name__})"
            ) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


Handler = Callable[[Request], "Response | Awaitable[Response]"]


class MockTransport:
    """A transport that hands each request to `handler` (tests)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []

    async def send(self, request: Request) -> Response:
        self.requests.append(request)
        answer = self.handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        assert isinstance(answer, Response)
        return Response(answer.status, CIMultiDictProxy(CIMultiDict(answer.headers)), answer.body)

    async def aclose(self) -> None:
        return None


@dataclass(slots=True)
class ClientStats:
    statuses: Counter[int] = field(default_factory=Counter)  # answers by HTTP status
    api_calls: int = 0
    search_calls: int = 0
    retries: int = 0
    http_429: int = 0
    transport_errors: int = 0


class RequestLog(Protocol):
    """Told of every attempt a client sends (`hsbulk bench` keeps timings this way)."""

    def record(self, sent_at: float, answered_at: float, status: int, search: bool) -> None:
        """One attempt: clock times of its send and answer; `status` 0 for no answer."""


REQUEST_LOG: ContextVar[RequestLog | None] = ContextVar("hsbulk_request_log", default=None)
"""The log a client created in this context reports to (None: no timing kept)."""


_TOKEN_LIKE = re.compile(rb"pat-[a-z]{2,3}\d?-[0-9a-fA-F-]{8,}")
REDACTED = b"[REDACTED]"


class HubSpotClient:
    """Auth, limiters, classification and retries around one transport."""

    def __init__(self, settings: ClientSettings, *, transport: Transport | None = None,
                 limiter: Limiter | None = None, search_limiter: Limiter | None = None,
                 clock: Clock | None = None, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or AnyioClock()
        self.transport: Transport = transport or AiohttpTransport(
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            limit=settings.concurrency,
        )
        self.limiter: Limiter = limiter or _limiter_for(settings, search=False, clock=self.clock)
        self.search_limiter: Limiter = search_limiter or _limiter_for(
            settings, search=True, clock=self.clock
        )
        self.rng = rng or random.Random()
        self.budget = RetryBudget(settings.retry.budget_ratio, settings.retry.budget_min)
        self.stats = ClientStats()
        self.request_log = REQUEST_LOG.get()
        # At most `concurrency` calls hold or wait for a limiter ticket. A free slot is
        # taken without a trip round the event loop (one loop turn per call saved).
        self._slots = anyio.Semaphore(settings.concurrency, fast_acquire=True)
        self._headers = {
            "Authorization": f"Bearer {settings.token.reveal()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"hsbulk/{__version__}",
        }
        self._token_forms = _token_forms(settings.token)
        self._redactions = _redactions(settings.token)

    async def __aenter__(self) -> HubSpotClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()

    def __repr__(self) -> str:
        return f"<HubSpotClient {self.settings.base_url} token=******** {self.stats}>"

    # -- requests -------------------------------------------------------------------

    async def request(self, method: str, path: str, *, body: bytes | None = None,
                      params: Params | None = None, search: bool = False) -> Response:
        """Send one call; return a 2xx response or raise a typed error.

        429s pause the shared limiter and are retried; 423/477/502-504/521+ and transport
        errors are retried with full-jitter backoff while the retry budget allows; a
        DAILY 429 raises `QuotaExhausted`; 401/403 raise `FatalApiError`; other statuses
        raise `ApiError` with HubSpot's fields.
        """
        limiter = self.search_limiter if search else self.limiter
        request = Request(method, self.settings.base_url + path, self._headers, body, params)
        policy = self.settings.retry
        self.budget.on_first_attempt()
        attempt = 0
        ambiguous = False
        while True:
            error: Exception
            async with self._slots:
                ticket = await limiter.acquire()
                self.stats.api_calls += 1
                if search:
                    self.stats.search_calls += 1
                try:
                    answer = await self.transport.send(request)
                except TransportError as exc:
                    self.stats.transport_errors += 1
                    answer = None
                    error = exc
                finally:
                    limiter.complete(ticket)
                if self.request_log is not None:
                    self.request_log.record(ticket.sent_at, self.clock.now(),
                                            0 if answer is None else answer.status, search)
            delay = 0.0
            paced = False  # a 429: the shared limiter paces the retry, not the budget
            if answer is not None:
                self.stats.statuses[answer.status] += 1
                limiter.observe(answer.headers, sent_at=ticket.sent_at, seq=ticket.seq)
                answer = self._scrubbed(answer)
                if 200 <= answer.status < 300:
                    log.debug("%s %s -> %d", method, path, answer.status)
                    if ambiguous:
                        return Response(answer.status, answer.headers, answer.body, True)
                    return answer
                outcome = classify(answer.status, answer.headers, answer.body)
                error = error_for(outcome, answer.body, what=f"{method} {path}")
                if isinstance(error, ApiError):
                    error.ambiguous = ambiguous
                log.debug("%s %s -> %d %s", method, path, answer.status, outcome.verdict.value)
                if outcome.verdict is Verdict.RATE_LIMITED:
                    paced = True
                    self.stats.http_429 += 1
                    limiter.on_rate_limited(_clamp(outcome.retry_after_s, policy.cap_s))
                elif outcome.verdict is Verdict.RETRY:
                    ambiguous = ambiguous or answer.status >= 500
                    if outcome.retry_after_s is not None:
                        delay = min(outcome.retry_after_s, policy.retry_after_cap_s)
                    else:
                        delay = backoff_s(attempt, policy, self.rng)
                else:
                    raise error
            else:
                ambiguous = True
                delay = backoff_s(attempt, policy, self.rng)
            attempt += 1
            if attempt >= policy.max_attempts or not (paced or self.budget.try_spend()):
                if isinstance(error, RetryableApiError | TransportError):
                    log.warning("%s %s: giving up after %d attempts: %s",
                                method, path, attempt, error)
                raise error
            self.stats.retries += 1
            log.debug("%s %s: retry %d in %.2fs after %s", method, path, attempt, delay, error)
            if delay > 0:
                await self.clock.sleep(delay)

    async def get_json(self, path: str, params: Params | None = None) -> Any:
        return (await self.request("GET", path, params=params)).json()

    async def post_json(self, path: str, payload: Any, *, search: bool = False) -> Response:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        return await self.request("POST", path, body=body, search=search)

    def _scrubbed(self, answer: Response) -> Response:
        """The answer as callers may see it: no form of the token left in its body.

        A success body (the hot path) costs one `in` per form of the token, usually one;
        an error body, small and shown to people, always goes through `_scrub`.
        """
        body = answer.body
        if 200 <= answer.status < 300:
            for form in self._token_forms:
                if form in body:
                    break
            else:
                return answer
        clean = self._scrub(body)
        if clean == body:
            return answer
        return Response(answer.status, answer.headers, clean, answer.ambiguous)

    def _scrub(self, body: bytes) -> bytes:
        """Remove the token (any form, any 8-character piece) from text a server sent."""
        for piece in self._redactions:
            if piece in body:
                body = body.replace(piece, REDACTED)
        return _TOKEN_LIKE.sub(REDACTED, body)


def _token_forms(token: Secret) -> tuple[bytes, ...]:
    """The whole token as it may come back: raw, JSON-escaped, percent-encoded."""
    text = token.reveal()
    raw = text.encode()
    forms = {raw, orjson.dumps(text)[1:-1], raw.replace(b"/", b"\\/"),
             urllib.parse.quote(text, safe="").encode()}
    return tuple(sorted((f for f in forms if f), key=len, reverse=True))


def _redactions(token: Secret) -> list[bytes]:
    """Every form of the token and every 8-character piece of it, longest first."""
    raw = token.reveal().encode()
    pieces = set(_token_forms(token)) | {raw[i : i + 8] for i in range(max(0, len(raw) - 7))}
    return sorted(pieces, key=len, reverse=True)


def _clamp(value: float | None, cap_s: float) -> float | None:
    return None if value is None else min(value, cap_s)


def _limiter_for(settings: ClientSettings, *, search: bool, clock: Clock) -> Limiter:
    rate = settings.search_rate if search else settings.rate
    # Searches have their own budget, outside the 10-second window: they never take up
    # a window some answer's headers declare (only headers of the same interval count).
    if rate is None:
        return Unlimited(clock, follows_server=not search)
    return RollingWindowLimiter(
        rate.requests,
        rate.window_s,
        clock=clock,
        daily_reserve=0 if search else settings.daily_reserve,
        name="search" if search else "api",
        follows_server=not search,
        first_in_flight=None if search else first_window_in_flight(settings.concurrency),
    )
