"""Connection limits uvicorn lacks: an idle deadline for new connections, a request-head deadline that
follows progress, and a bound on open connections with a per-client share.

uvicorn arms ``timeout_keep_alive`` only after a response and cancels it on any byte, so a connection
that never sends a request, or sends its headers one byte a second, is held for ever; its
``limit_concurrency`` answers plain text, counts no client apart and acts only once a request's
headers are in. This protocol is uvicorn's httptools one plus those three things; everything after
the headers (body pace, uploads, photos in flight) is :class:`service.middleware.AdmissionMiddleware`'s.

A connection over its client's share is answered late (``share_refusal_delay_s``, a tarpit): refusing
costs the event loop ~100 us however fast it is done, and a client that reconnects the moment it is
refused would otherwise keep the loop busy refusing it (~5000 connections/s from one process on
loopback, the other clients' p99 13x). Held, its sockets cost a descriptor each and no CPU.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from service.limits import Pace, Refusal, SharedBound, raw_http_response
from service.settings import Settings


class ConnectionGuard:
    """What all connections share: the bound on open connections, the idle and head deadlines, a refusal hook."""

    linger_s = 2.0  # how long a refused connection still reads (and drops) what its client sends

    def __init__(self, settings: Settings, on_reject: Callable[[str], None] = lambda reason: None):
        self.connections = SharedBound("connections", "open connections", settings.max_connections,
                                       settings.client_share)
        self.idle_s = float(settings.keep_alive_timeout_s)
        self.head = Pace(settings.header_timeout_s, settings.min_rate_bytes_s, settings.header_timeout_max_s)
        self.on_reject = on_reject
        self.share_delay_s = settings.share_refusal_delay_s
        self.max_held = settings.max_connections
        self.held = 0  # refused connections waiting for their answer

    def hold(self, refusal: Refusal) -> float:
        """How long to hold a refused connection before answering: over a client's share, the tarpit's
        delay while fewer than ``max_held`` wait; otherwise (the service full, the tarpit full) at once."""
        if refusal.status != 429 or not self.share_delay_s or self.held >= self.max_held:
            return 0.0
        self.held += 1
        return self.share_delay_s

    def unhold(self) -> None:
        """A held connection was answered or hung up: its place in the tarpit is free."""
        self.held -= 1

    def slow_head(self, received: int, elapsed_s: float) -> Refusal:
        return Refusal(408, "request_timeout", f"the request headers sent {received} bytes in {elapsed_s:.1f} s; they "
                       f"must arrive within {self.head.timeout_s:g} s, plus 1 s per {self.head.min_rate:g} bytes "
                       f"received, {self.head.max_s:g} s at most", reason="slow_headers", retry_after_s=None,
                       close=True)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, held to :class:`ConnectionGuard`'s limits (see :func:`guarded_protocol`)."""

    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._peer = "unknown"
        self._counted = False
        self._timer: asyncio.TimerHandle | None = None
        self._head_started: float | None = None  # loop time of the first byte of the request head under way
        self._head_bytes = 0
        self._lingering = False
        self._held = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._peer = self.client[0] if self.client else "unknown"
        refusal = self.guard.connections.acquire(self._peer)
        if refusal is not None:
            self._refuse(refusal)
            return
        self._counted = True
        self._timer = self.loop.call_later(self.guard.idle_s, self._idle_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._unhold()
        self._release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self.cycle is None or self.cycle.response_complete:  # between requests: these bytes are a request head
            self._head_progress(len(data))
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._cancel_timer()
        self._head_started = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete:  # the rest of a body refused early has come
            self._cancel_timer()
            self._head_started = None
            self._timer = self.loop.call_later(self.guard.idle_s, self._idle_expired)

    def handle_websocket_upgrade(self) -> None:
        """The WebSocket protocol takes the transport over: it keeps this connection's slot until it closes."""
        super().handle_websocket_upgrade()
        websocket = self.transport.get_protocol()
        lost = websocket.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            self._release()
            lost(exc)

        websocket.connection_lost = connection_lost  # type: ignore[method-assign]

    def _head_progress(self, received: int) -> None:
        now = self.loop.time()
        if self._head_started is None:
            self._head_started, self._head_bytes = now, 0
            self._cancel_timer()  # the idle deadline gives way to the head's
            self._timer = self.loop.call_at(self.guard.head.deadline(now, 0), self._head_expired)
        self._head_bytes += received

    def _head_expired(self) -> None:
        """Check the deadline the bytes received so far earn; re-arm while it has not passed."""
        assert self._head_started is not None
        deadline = self.guard.head.deadline(self._head_started, self._head_bytes)
        now = self.loop.time()
        if now < deadline:
            self._timer = self.loop.call_at(deadline, self._head_expired)
        else:
            self._timer = None
            self._answer_and_close(self.guard.slow_head(self._head_bytes, now - self._head_started))

    def _idle_expired(self) -> None:
        """No byte since the connection opened: close it without an answer, as a keep-alive timeout does."""
        self._timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _refuse(self, refusal: Refusal) -> None:
        """Refuse a new connection, after the guard's :meth:`~ConnectionGuard.hold` (what it sends is dropped)."""
        delay = self.guard.hold(refusal)
        if not delay:
            self._answer_and_close(refusal)
            return
        self.guard.on_reject(refusal.reason)
        self._held = self._lingering = True
        self._timer = self.loop.call_later(delay, self._answer_held, refusal)

    def _answer_held(self, refusal: Refusal) -> None:
        self._timer = None
        self._unhold()
        self._answer(refusal)

    def _unhold(self) -> None:
        if self._held:
            self._held = False
            self.guard.unhold()

    def _answer_and_close(self, refusal: Refusal) -> None:
        self.guard.on_reject(refusal.reason)
        self._answer(refusal)

    def _answer(self, refusal: Refusal) -> None:
        """Answer, then linger: closing with unread bytes would send a reset, and a client still writing would
        lose the answer. So: end our side, drop what still comes, close when the client does or at ``linger_s``."""
        if self.transport.is_closing():
            return
        self.transport.write(raw_http_response(replace(refusal, close=True).response()))
        self._cancel_timer()
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._timer = self.loop.call_later(self.guard.linger_s, self.transport.close)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self.guard.connections.release(self._peer)


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedHttpProtocol]:
    """A protocol class for ``uvicorn.run(http=...)`` whose connections share ``guard``."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"guard": guard})


class BoundedSendWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol with a fixed kernel send buffer.

    A live viewer that stops reading is closed once a send has waited ``live_send_timeout_s``; but a send
    only waits once the kernel's buffers are full, and TCP autotuning lets the send side alone grow to
    4 MiB: at 15 answers a second of 40 KB, seven seconds of frames processed for no one before the
    timeout even starts. A fixed buffer makes that bound the setting's, not the kernel's.
    """

    send_buffer_bytes = 256 * 1024

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer_bytes)
        super().connection_made(transport)


def bounded_ws_protocol(settings: Settings) -> type[BoundedSendWebSocketProtocol]:
    """A protocol class for ``uvicorn.run(ws=...)`` with ``settings.live_send_buffer_bytes``."""
    return type("BoundedSendWebSocketProtocol", (BoundedSendWebSocketProtocol,),
                {"send_buffer_bytes": settings.live_send_buffer_bytes})
