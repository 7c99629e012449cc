"""Pure ASGI middleware: admission control, body-size limit, request id, access log and request metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass

from fastapi import FastAPI
from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.deps import api_key_matches
from service.errors import error_response
from service.limits import Pace, Refusal, RefusedError, SharedBound
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger("service.access")


class BodyLimitMiddleware:
    """413 before reading more than ``max_bytes`` (declared Content-Length or streamed bytes)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            too_large = error_response(413, "payload_too_large",
                                       f"request body is {int(declared)} bytes; the limit is {self.max_bytes}")
            return await too_large(scope, receive, send)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(413, f"request body exceeds {self.max_bytes} bytes")
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge as exc:
            await error_response(413, "payload_too_large", exc.detail)(scope, receive, send)


class _TooLarge(HTTPException):
    """An HTTPException so that FastAPI's body parsing re-raises it: any other error there becomes a 400."""


@dataclass
class AdmissionLimits:
    """The two bounds of the gated paths, the upload's pace and the whole-request deadline."""

    uploads: SharedBound
    in_flight: SharedBound
    body: Pace
    timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> AdmissionLimits:
        share = settings.client_share
        return cls(SharedBound("uploads", "uploads in progress", settings.max_uploads, share),
                   SharedBound("in_flight", "photos in flight", settings.in_flight_limit, share),
                   Pace(settings.body_timeout_s, settings.min_rate_bytes_s), settings.request_timeout_s)


def client_identity(scope: Scope, api_key: SecretStr | None) -> str:
    """Whose share a request counts against: the API key when keys are on and it is valid, else the address."""
    if api_key is not None and api_key_matches(Headers(scope=scope), api_key):
        return "api-key"
    client = scope.get("client")
    return f"address {client[0]}" if client else "address unknown"


class AdmissionMiddleware:
    """Two bounds on ``paths``, each with a per-client share, and a body deadline that follows the upload.

    An upload holds an *upload* slot from its headers to its last byte, then an *in-flight* slot (a
    photo admitted for decoding and parsing) until its answer. Counting uploads apart means a client
    that uploads slowly delays no photo that is ready; the per-client share (429 + ``Retry-After``)
    means one client with many sockets cannot fill either bound; a full bound answers 503 +
    ``Retry-After`` at once. The upload must keep ``body.min_rate`` bytes/s after its first
    ``body.timeout_s`` or it gets 408 and its connection is closed, freeing the slot at once. Any
    admitted request without an answer ``timeout_s`` after arriving gets 504, whichever stage it is
    in. ``on_idle`` runs each time the last gated request finishes.
    """

    def __init__(self, app: ASGIApp, paths: Collection[str], limits: AdmissionLimits,
                 identify: Callable[[Scope], str], on_reject: Callable[[str], None],
                 on_busy: Callable[[], None] = lambda: None, on_idle: Callable[[], None] = lambda: None):
        self.app, self.paths, self.limits, self.identify = app, frozenset(paths), limits, identify
        self.on_reject, self.on_busy, self.on_idle = on_reject, on_busy, on_idle
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        ticket = _Ticket(self.limits, self.identify(scope), self.on_reject)
        refusal = ticket.start()
        if refusal is not None:
            return await refusal.response()(scope, receive, send)
        self.active += 1
        self.on_busy()
        try:
            await self._run(ticket, scope, receive, send)
        finally:
            ticket.finish()
            self.active -= 1
            if self.active == 0:
                self.on_idle()

    async def _run(self, ticket: _Ticket, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with asyncio.timeout_at(ticket.deadline()) as timer:
                await self.app(scope, ticket.paced(receive, timer), ticket.tracked(send))
        except TimeoutError:
            if ticket.answered:
                raise
            await ticket.timed_out().response()(scope, receive, send)
        except RefusedError as exc:  # only reaches here when no exception handler inside answered it
            if ticket.answered:
                raise
            await exc.refusal.response()(scope, receive, send)


class _Ticket:
    """One gated request: the slot it holds, the body bytes received so far, and its deadline."""

    def __init__(self, limits: AdmissionLimits, client: str, on_reject: Callable[[str], None]):
        self.limits, self.client, self.on_reject = limits, client, on_reject
        self.arrived = asyncio.get_running_loop().time()
        self.received = 0
        self.uploading = self.admitted = self.answered = False

    def start(self) -> Refusal | None:
        refusal = self._counted(self.limits.uploads.acquire(self.client))
        self.uploading = refusal is None
        return refusal

    def deadline(self) -> float:
        whole = self.arrived + self.limits.timeout_s
        return min(whole, self.limits.body.deadline(self.arrived, self.received)) if self.uploading else whole

    def paced(self, receive: Receive, timer: asyncio.Timeout) -> Receive:
        """``receive`` that moves the deadline with each body chunk and trades the upload slot at the last one."""
        async def paced_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and self.uploading:
                self.received += len(message.get("body", b""))
                if not message.get("more_body", False):
                    self._admit()
                timer.reschedule(self.deadline())
            return message
        return paced_receive

    def tracked(self, send: Send) -> Send:
        async def tracked_send(message: Message) -> None:
            self.answered = self.answered or message["type"] == "http.response.start"
            await send(message)
        return tracked_send

    def _admit(self) -> None:
        self.limits.uploads.release(self.client)
        self.uploading = False
        refusal = self._counted(self.limits.in_flight.acquire(self.client))
        if refusal is not None:
            raise refusal.exception()
        self.admitted = True

    def finish(self) -> None:
        if self.uploading:
            self.limits.uploads.release(self.client)
        if self.admitted:
            self.limits.in_flight.release(self.client)
        self.uploading = self.admitted = False

    def _counted(self, refusal: Refusal | None) -> Refusal | None:
        if refusal is not None:
            self.on_reject(refusal.reason)
        return refusal

    def timed_out(self) -> Refusal:
        elapsed = asyncio.get_running_loop().time() - self.arrived
        whole = self.limits.timeout_s
        if self.uploading:
            pace = self.limits.body
            refusal = Refusal(408, "request_timeout", f"the upload sent {self.received} bytes in {elapsed:.1f} s; "
                              f"after the first {pace.timeout_s:g} s it must keep {pace.min_rate:g} bytes/s (and end "
                              f"within {whole:g} s)", reason="slow_upload", retry_after_s=None, close=True)
        else:
            refusal = Refusal(504, "timeout", f"no answer within the request timeout of {whole:g} s",
                              reason="timeout", retry_after_s=None)
        self.on_reject(refusal.reason)
        return refusal


class RequestContextMiddleware:
    """Request id (``X-Request-ID``, taken from the client when sane), JSON access log, metrics.

    The endpoint label is the matched route template (:func:`endpoint_label`), so unknown
    paths collapse into one ``other`` series.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
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
            endpoint = endpoint_label(scope)
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(elapsed)
            log.info(json.dumps({"request_id": request_id, "method": scope.get("method"), "endpoint": endpoint,
                                 "status": status, "ms": round(elapsed * 1000, 1)}))


def endpoint_label(scope: Scope) -> str:
    """The matched route's template, else the path when the API documents it, else ``other``.

    Requests answered before routing (a 413 on the declared body length, an admission refusal)
    have no matched route; the documented paths are a fixed set (FastAPI builds the schema once),
    so labelling by them keeps the label bounded.
    """
    route_path = getattr(scope.get("route"), "path", None)
    if route_path:
        return route_path
    app = scope.get("app")
    documented = app.openapi()["paths"] if isinstance(app, FastAPI) else {}
    return scope["path"] if scope["path"] in documented else "other"
