"""Pure ASGI middleware: admission control, body-size limit, request id, access log and request metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Collection

from starlette.exceptions import HTTPException

from service.metrics import Metrics

log = logging.getLogger("service.access")


class BodyLimitMiddleware:
    """413 before reading more than ``max_bytes`` (declared Content-Length or streamed bytes)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _send_json(send, 413, "payload_too_large",
                                    f"request body is {int(declared)} bytes; the limit is {self.max_bytes}")
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(413, f"request body exceeds {self.max_bytes} bytes")
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await _send_json(send, 413, "payload_too_large", f"request body exceeds {self.max_bytes} bytes")


class _TooLarge(HTTPException):
    """An HTTPException so that FastAPI's body parsing re-raises it: any other error there becomes a 400."""


async def _send_json(send, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})


class AdmissionMiddleware:
    """503 + ``Retry-After`` on arrival, before the body is read, once ``limit`` model requests are in flight.

    The batcher's bounded queue only covers requests that are ready for the model; upload, decoding
    and face finding come before it. Without this gate a burst queues for the CPU in front of the
    queue and is refused only after seconds of work (measured: 27 s for the slowest answer of a
    160-request burst). An admitted request that has not started its answer ``timeout_s`` after
    arriving gets 504, whichever stage it is in. ``on_idle`` runs each time the last request in
    flight finishes.
    """

    def __init__(self, app, paths: Collection[str], limit: int, timeout_s: float,
                 on_reject: Callable[[str], None], on_busy: Callable[[], None] = lambda: None,
                 on_idle: Callable[[], None] = lambda: None):
        self.app, self.paths, self.limit, self.timeout_s = app, frozenset(paths), limit, timeout_s
        self.on_reject, self.on_busy, self.on_idle = on_reject, on_busy, on_idle
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        scope.setdefault("state", {})["endpoint"] = scope["path"]
        if self.in_flight >= self.limit:
            self.on_reject("in_flight")
            return await _send_json(send, 503, "overloaded",
                                    f"{self.in_flight} requests are in flight (limit {self.limit}); retry shortly",
                                    {"Retry-After": "1"})
        self.in_flight += 1
        self.on_busy()
        started = False

        async def send_tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            async with asyncio.timeout(self.timeout_s):
                await self.app(scope, receive, send_tracked)
        except TimeoutError:
            if started:
                raise
            self.on_reject("timeout")
            await _send_json(send, 504, "timeout", f"no answer within the request timeout of {self.timeout_s} s")
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.on_idle()


class RequestContextMiddleware:
    """Request id (``X-Request-ID``, taken from the client when sane), JSON access log, metrics.

    The endpoint label is the matched route template, so unknown paths collapse
    into one ``other`` series.
    """

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status = 500

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or scope.get("state", {}).get("endpoint") or "other"
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(elapsed)
            log.info(json.dumps({"request_id": request_id, "method": scope.get("method"), "endpoint": endpoint,
                                 "status": status, "ms": round(elapsed * 1000, 1)}))
