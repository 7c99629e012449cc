"""Admission control: uploads and photos in flight bounded apart, a per-client share, deadlines that follow progress."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.errors import http_error_handler
from service.limits import Pace, SharedBound
from service.middleware import AdmissionLimits, AdmissionMiddleware, client_identity
from tests.conftest import metric


def limits(uploads: int = 4, in_flight: int = 2, share: float = 1.0, body_timeout_s: float = 30.0,
           min_rate: float = 500.0, timeout_s: float = 30.0) -> AdmissionLimits:
    return AdmissionLimits(SharedBound("uploads", "uploads in progress", uploads, share),
                           SharedBound("in_flight", "photos in flight", in_flight, share),
                           Pace(body_timeout_s, min_rate), timeout_s)


def gated_app(release: asyncio.Event, events: list[str], gate_limits: AdmissionLimits) -> AdmissionMiddleware:
    async def parse(request):
        body = await request.body()
        events.append("read")
        await release.wait()
        return JSONResponse({"bytes": len(body)})

    async def health(request):
        return JSONResponse({"alive": True})

    app = Starlette(routes=[Route("/parse", parse, methods=["POST"]), Route("/healthz", health)],
                    exception_handlers={HTTPException: http_error_handler})
    return AdmissionMiddleware(app, paths={"/parse"}, limits=gate_limits,
                               identify=lambda scope: scope["client"][0],
                               on_reject=lambda reason: events.append(reason),
                               on_busy=lambda: events.append("busy"), on_idle=lambda: events.append("idle"))


def client_for(app, address: str = "10.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 1234)), base_url="http://t",
                             timeout=10)


async def trickle(chunks: int, every_s: float, size: int = 1):
    """An upload body: ``chunks`` chunks of ``size`` bytes, one every ``every_s`` seconds."""
    for _ in range(chunks):
        yield b"x" * size
        await asyncio.sleep(every_s)


async def wait_until(predicate, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_photos_beyond_the_in_flight_limit_are_refused_and_the_gate_reopens():
    release, events = asyncio.Event(), []
    gate = gated_app(release, events, limits())
    async with client_for(gate) as client:
        held = [asyncio.create_task(client.post("/parse", content=b"x")) for _ in range(2)]
        await wait_until(lambda: events.count("read") == 2)
        refused = await asyncio.wait_for(client.post("/parse", content=b"x"), timeout=2)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"] == "overloaded"
        assert (await client.get("/healthz")).status_code == 200  # other paths are never gated
        release.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        assert (await client.post("/parse", content=b"x")).status_code == 200
    assert events.count("in_flight") == 1
    assert events.count("idle") == 2  # after the burst drained, and after the last request
    assert gate.limits.uploads.held == gate.limits.in_flight.held == 0


async def test_an_admitted_request_without_an_answer_by_the_deadline_gets_504():
    release, events = asyncio.Event(), []
    async with client_for(gated_app(release, events, limits(timeout_s=0.2))) as client:
        late = await asyncio.wait_for(client.post("/parse", content=b"x"), timeout=2)
        assert late.status_code == 504 and late.json()["error"] == "timeout"
        release.set()
        assert (await client.post("/parse", content=b"x")).status_code == 200
    assert events.count("timeout") == 1 and events.count("idle") == 2


async def test_an_upload_below_the_minimum_rate_gets_408_and_frees_its_slot_at_once():
    release, events = asyncio.Event(), []
    release.set()
    gate = gated_app(release, events, limits(uploads=1, body_timeout_s=0.3, min_rate=500))
    async with client_for(gate) as client:
        start = time.monotonic()
        slow = await client.post("/parse", content=trickle(chunks=50, every_s=1.0))
        elapsed = time.monotonic() - start
        assert slow.status_code == 408, slow.text
        assert slow.json()["error"] == "request_timeout" and "bytes/s" in slow.json()["detail"]
        assert slow.headers["connection"] == "close"
        assert 0.3 <= elapsed < 1.0
        assert gate.limits.uploads.held == 0  # the one upload slot is free again
        assert (await client.post("/parse", content=b"photo")).json() == {"bytes": 5}
    assert events.count("slow_upload") == 1


async def test_an_upload_that_keeps_the_minimum_rate_may_last_longer_than_the_body_timeout():
    release, events = asyncio.Event(), []
    release.set()
    async with client_for(gated_app(release, events, limits(body_timeout_s=0.3, min_rate=1000))) as client:
        start = time.monotonic()
        steady = await client.post("/parse", content=trickle(chunks=10, every_s=0.1, size=200))  # ~2000 B/s
        assert steady.status_code == 200 and steady.json() == {"bytes": 2000}
        assert time.monotonic() - start > 0.6


async def test_a_client_over_its_share_gets_429_while_others_are_served():
    release, events = asyncio.Event(), []
    gate = gated_app(release, events, limits(uploads=4, in_flight=4, share=0.5))  # 2 each
    greedy, other = client_for(gate, "10.0.0.1"), client_for(gate, "10.0.0.2")
    async with greedy, other:
        stalled = [asyncio.create_task(greedy.post("/parse", content=trickle(chunks=3, every_s=0.5)))
                   for _ in range(2)]
        await wait_until(lambda: gate.limits.uploads.by_client["10.0.0.1"] == 2)
        refused = await asyncio.wait_for(greedy.post("/parse", content=b"x"), timeout=2)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"] == "too_many_requests"
        served = asyncio.create_task(other.post("/parse", content=b"x"))
        await wait_until(lambda: events.count("read") == 1)
        release.set()
        assert (await served).status_code == 200
        assert [r.status_code for r in await asyncio.gather(*stalled)] == [200, 200]
    assert events.count("uploads_share") == 1


async def test_full_uploads_answer_503_to_every_client():
    release, events = asyncio.Event(), []
    gate = gated_app(release, events, limits(uploads=2, share=1.0))
    first, second = client_for(gate, "10.0.0.1"), client_for(gate, "10.0.0.2")
    async with first, second:
        stalled = [asyncio.create_task(first.post("/parse", content=trickle(chunks=2, every_s=0.5)))
                   for _ in range(2)]
        await wait_until(lambda: gate.limits.uploads.held == 2)
        refused = await second.post("/parse", content=b"x")
        assert refused.status_code == 503 and refused.json()["error"] == "overloaded"
        assert "uploads in progress" in refused.json()["detail"]
        release.set()
        await asyncio.gather(*stalled)


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, "address 10.1.2.3"),
    ({"x-api-key": "secret"}, "api-key"),
    ({"authorization": "Bearer secret"}, "api-key"),
    ({"x-api-key": "wrong"}, "address 10.1.2.3"),  # a wrong key counts against the address, not the key
])
def test_a_client_is_its_api_key_when_keys_are_on_else_its_address(headers, expected):
    raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
    scope = {"type": "http", "client": ("10.1.2.3", 5), "headers": raw_headers}
    assert client_identity(scope, SecretStr("secret")) == expected
    assert client_identity(scope, None) == "address 10.1.2.3"


def test_a_body_refused_by_its_declared_length_is_counted_under_its_endpoint(make_client):
    client = make_client(max_upload_bytes=1024)  # the body limit: 1024 + 64 KiB of multipart framing
    for path in ("/parse", "/recolor", "/no/such/path"):
        r = client.post(path, files={"image": ("photo.png", b"x" * 70_000, "image/png")})
        assert r.status_code == 413, r.text
    text = client.get("/metrics").text
    for endpoint in ("/parse", "/recolor", "other"):  # unknown paths stay in one series
        assert metric(text, "faceparse_requests_total", endpoint=endpoint, status="413") == 1, endpoint
    assert "/no/such/path" not in text
