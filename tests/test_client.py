import logging
import socket
import traceback

import anyio
import orjson
import pytest
from aiohttp import web

from engine.client import HubSpotClient, MockTransport, Response
from engine.config import ClientSettings, Rate, RetryPolicy, Secret
from engine.errors import (
    ApiError,
    ConnectError,
    FatalApiError,
    QuotaExhausted,
    RequestTimeout,
    RetryableApiError,
)
from tests.conftest import RecordingServer

TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"


def settings(base_url="http://127.0.0.1:9", **overrides):
    values = {"rate": None, "search_rate": None, "concurrency": 4}
    values.update(overrides)
    return ClientSettings(base_url, Secret(TOKEN), **values)


def scripted(*answers):
    """A handler that answers with each (status, body, headers) in turn, then 200s."""
    queue = list(answers)

    def handler(request):
        if queue:
            status, body, headers = queue.pop(0)
            return Response(status, headers, body)
        return Response(200, {}, b'{"ok":true}')

    return handler


def rate_body(policy):
    return orjson.dumps({"status": "error", "message": f"limit {policy}",
                         "errorType": "RATE_LIMIT", "policyName": policy})


async def test_transient_errors_are_retried_until_success(clock):
    transport = MockTransport(scripted((503, b"{}", {}), (502, b"", {}), (504, b"", {})))
    async with HubSpotClient(settings(), transport=transport, clock=clock) as client:
        assert await client.get_json("/crm/v3/objects/contacts") == {"ok": True}
    assert len(transport.requests) == 4
    assert client.stats.retries == 3
    assert len(clock.sleeps) == 3


@pytest.mark.parametrize(("status", "error"), [(401, FatalApiError), (403, FatalApiError),
                                                 (400, ApiError), (404, ApiError),
                                                 (409, ApiError), (500, ApiError)])
async def test_client_errors_are_not_retried(clock, status, error):
    payload = orjson.dumps({"status": "error", "message": "nope", "category": "X",
                            "correlationId": "c-1"})
    transport = MockTransport(scripted((status, payload, {})))
    async with HubSpotClient(settings(), transport=transport, clock=clock) as client:
        with pytest.raises(error) as info:
            await client.get_json("/x")
    assert len(transport.requests) == 1
    assert (info.value.status, info.value.message, info.value.correlation_id) == (status, "nope",
                                                                                  "c-1")


async def test_daily_429_stops_without_retry(clock):
    transport = MockTransport(scripted((429, rate_body("DAILY"), {})))
    async with HubSpotClient(settings(), transport=transport, clock=clock) as client:
        with pytest.raises(QuotaExhausted):
            await client.get_json("/x")
    assert len(transport.requests) == 1


async def test_rolling_429_pauses_the_shared_limiter_and_honours_retry_after(clock):
    transport = MockTransport(scripted((429, rate_body("TEN_SECONDLY_ROLLING"),
                                        {"Retry-After": "4"})))
    async with HubSpotClient(settings(rate=Rate(100, 10.0)), transport=transport,
                             clock=clock) as client:
        start = clock.now()
        await client.get_json("/x")
        assert clock.now() - start >= 4.0
        assert client.stats.http_429 == 1
        assert client.limiter.limit(clock.now()) < 100


async def test_secondly_429_on_search_pauses_only_the_search_limiter(clock):
    transport = MockTransport(scripted((429, rate_body("SECONDLY"), {})))
    async with HubSpotClient(settings(rate=Rate(100, 10.0), search_rate=Rate(5, 1.0)),
                             transport=transport, clock=clock) as client:
        await client.post_json("/crm/v3/objects/contacts/search", {}, search=True)
        assert client.search_limiter.cuts == 1
        assert client.limiter.cuts == 0


@pytest.mark.parametrize(("header", "expected"), [("7", 7.0), ("100000", 120.0)])
async def test_retry_after_on_477_is_honoured_and_clamped(clock, header, expected):
    transport = MockTransport(scripted((477, b"{}", {"Retry-After": header})))
    async with HubSpotClient(settings(), transport=transport, clock=clock) as client:
        await client.get_json("/x")
    assert clock.sleeps == [expected]


async def test_retry_budget_bounds_traffic_during_a_60s_outage(clock):
    outage_ends = clock.now() + 60.0

    def handler(request):
        if clock.now() < outage_ends:
            return Response(503, {}, b"down")
        return Response(200, {}, b"{}")

    transport = MockTransport(handler)
    policy = RetryPolicy(max_attempts=8, base_s=0.05, cap_s=1.0, budget_ratio=0.2,
                         budget_min=20)
    failures = 0
    first_attempts = 0
    async with HubSpotClient(settings(retry=policy), transport=transport, clock=clock) as client:
        while clock.now() < outage_ends:
            first_attempts += 1
            try:
                await client.get_json("/x")
            except RetryableApiError:
                failures += 1
                await clock.sleep(0.1)  # the caller moves on to its next batch
        assert await client.get_json("/x") == {}  # and the client works again afterwards
    extra = len(transport.requests) - first_attempts
    assert failures > 0
    assert extra <= 20 + 0.2 * first_attempts + 1
    assert first_attempts > 100  # the outage lasted: it was the budget that held traffic down
    assert extra < 0.5 * first_attempts  # without the budget it would be 7 per attempt


async def test_headers_slow_the_client_down(clock):
    def handler(request):
        return Response(200, {"X-HubSpot-RateLimit-Max": "100",
                              "X-HubSpot-RateLimit-Remaining": "10",
                              "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}, b"{}")

    async with HubSpotClient(settings(rate=Rate(100, 10.0)), transport=MockTransport(handler),
                             clock=clock) as client:
        await client.get_json("/x")
        assert client.limiter.limit(clock.now()) <= 12


async def test_redirects_are_not_followed():
    async def handler(request, body):
        raise web.HTTPFound("/elsewhere")

    async with RecordingServer(handler) as server:
        async with HubSpotClient(settings(server.base_url)) as client:
            with pytest.raises(ApiError) as info:
                await client.get_json("/x")
    assert info.value.status == 302
    assert len(server.requests) == 1


async def test_timeouts_and_refused_connections_become_transport_errors():
    async def slow(request, body):
        await anyio.sleep(5)
        return web.json_response({})

    quick = RetryPolicy(max_attempts=2, base_s=0.01, cap_s=0.02)
    async with RecordingServer(slow) as server:
        async with HubSpotClient(settings(server.base_url, read_timeout_s=0.2,
                                          retry=quick)) as client:
            with pytest.raises(RequestTimeout):
                await client.get_json("/x")
        assert len(server.requests) == 2
    async with HubSpotClient(settings(f"http://127.0.0.1:{free_port()}", retry=quick)) as client:
        with pytest.raises(ConnectError):
            await client.get_json("/x")
        assert client.stats.transport_errors == 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_the_token_never_leaks(caplog, capsys):
    """401, a 500 that echoes request headers, and a refused connection."""
    caplog.set_level(logging.DEBUG)

    async def handler(request, body):
        if request.path == "/auth":
            return web.json_response({"status": "error", "message": "Authentication credentials "
                                      "not found", "category": "INVALID_AUTHENTICATION"},
                                     status=401)
        echoed = dict(request.headers)
        return web.json_response({"status": "error", "message": f"boom {echoed}",
                                  "headers": echoed,
                                  "token_tail": request.headers["Authorization"][-8:]},
                                 status=500)

    seen: list[str] = []
    quick = RetryPolicy(max_attempts=2, base_s=0.01, cap_s=0.02)
    async with RecordingServer(handler) as server:
        async with HubSpotClient(settings(server.base_url, retry=quick)) as client:
            for path in ("/auth", "/echo"):
                with pytest.raises(ApiError) as info:
                    await client.get_json(path)
                seen += [str(info.value), repr(info.value), repr(info.value.body),
                         "".join(traceback.format_exception(info.value))]
            seen.append(repr(client))
    assert server.requests[1][2]["Authorization"] == f"Bearer {TOKEN}"  # it was sent, and echoed
    async with HubSpotClient(settings(f"http://127.0.0.1:{free_port()}", retry=quick)) as client:
        with pytest.raises(ConnectError) as info:
            await client.get_json("/x")
        seen += [str(info.value), "".join(traceback.format_exception(info.value))]
    captured = capsys.readouterr()
    seen += [captured.out, captured.err, caplog.text]
    everything = "\n".join(seen)
    assert "boom" in everything and "token_tail" in everything
    assert TOKEN not in everything
    assert TOKEN[-8:] not in everything


async def test_every_form_of_the_token_is_scrubbed_from_success_bodies(clock):
    token = 'pat-na1/abc"def+ghi%jk'
    forms = [token.encode(), b'pat-na1/abc\\"def+ghi%jk', b'pat-na1\\/abc\\"def+ghi%jk',
             b"pat-na1%2Fabc%22def%2Bghi%25jk"]
    echo = b'{"status":"COMPLETE","errors":[{"message":"' + b" ".join(forms) + b'"}]}'
    clean = b'{"status":"COMPLETE","results":[]}'
    transport = MockTransport(scripted((207, echo, {}), (200, clean, {})))
    settings = ClientSettings("http://127.0.0.1:9", Secret(token), rate=None, search_rate=None)
    async with HubSpotClient(settings, transport=transport, clock=clock) as client:
        scrubbed = (await client.request("POST", "/x", body=b"{}")).body
        untouched = (await client.request("POST", "/x", body=b"{}")).body
    assert scrubbed.count(b"[REDACTED]") == 4
    assert not any(form in scrubbed for form in forms)
    assert b"def+ghi" not in scrubbed  # nor any 8-character piece of it
    assert untouched == clean
