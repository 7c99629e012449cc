"""Admission control: refuse on arrival once the in-flight limit is reached, recover after."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.middleware import AdmissionMiddleware


def gated_app(release: asyncio.Event, events: list[str], timeout_s: float = 30.0):
    async def parse(request):
        await request.body()
        await release.wait()
        return JSONResponse({"ok": True})

    async def health(request):
        return JSONResponse({"alive": True})

    app = Starlette(routes=[Route("/parse", parse, methods=["POST"]), Route("/healthz", health)])
    return AdmissionMiddleware(app, paths={"/parse"}, limit=2, timeout_s=timeout_s,
                               on_reject=lambda reason: events.append(reason),
                               on_busy=lambda: events.append("busy"), on_idle=lambda: events.append("idle"))


async def test_requests_beyond_the_limit_are_refused_at_once_and_the_gate_reopens():
    release, events = asyncio.Event(), []
    transport = httpx.ASGITransport(app=gated_app(release, events))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        held = [asyncio.create_task(client.post("/parse", content=b"x")) for _ in range(2)]
        while events.count("busy") < 2:
            await asyncio.sleep(0.01)
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


async def test_an_admitted_request_without_an_answer_by_the_deadline_gets_504():
    release, events = asyncio.Event(), []
    transport = httpx.ASGITransport(app=gated_app(release, events, timeout_s=0.2))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        late = await asyncio.wait_for(client.post("/parse", content=b"x"), timeout=2)
        assert late.status_code == 504 and late.json()["error"] == "timeout"
        release.set()
        assert (await client.post("/parse", content=b"x")).status_code == 200
    assert events.count("timeout") == 1 and events.count("idle") == 2
