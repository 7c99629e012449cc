"""WS /recolor/live: the live try-on protocol around :mod:`service.live`.

Client -> server: a JSON text message with the ``POST /recolor`` settings (again at
any time to change them), then frames as binary JPEG / WebP messages. Server ->
client: one binary JPEG per processed frame, in order (its JPEG comment says
``frame=<n>``, the index of the binary message it answers); JSON text messages
``{"type": "settings"}`` (settings taken), ``{"type": "stats", "fps",
"latency_ms", "dropped"}`` (every ``FACEPARSE_LIVE_STATS_EVERY_S``) and
``{"type": "error", "error", "detail"}`` (a bad frame or bad settings: the stream
goes on). A reader and an answerer run side by side: the reader keeps only the
newest waiting frame, so a client faster than the service gets bounded latency
and a dropped count instead of a growing queue.

Limits close the stream: 1008 (no valid API key, idle, a client that reads
nothing), 1009 (frame bytes, pixels or side; a settings message over
``SETTINGS_MAX_CHARS``), 1013 (too many streams, model not ready).
A client that reads nothing cannot even receive its close frame: the stream is
ended on the server (its slot freed, no more frames processed) and the
connection is left to the transport, which holds at most its write buffer.
The key: ``Authorization: Bearer`` / ``X-API-Key`` as for REST, or, since
browsers cannot set WebSocket headers, the ``api_key`` field of the first
settings message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from service.batcher import QueueFullError, QueueTimeoutError
from service.deps import api_key_valid, presented_key
from service.errors import ApiError, PayloadTooLarge
from service.inference import InferenceEngine
from service.live import Frame, LatestFrame, LiveStream, StreamStats, parse_options
from service.settings import Settings

router = APIRouter(tags=["recolor"])
log = logging.getLogger("service.live")

POLICY, TOO_BIG, TRY_LATER = 1008, 1009, 1013
CLOSE_CODES = (POLICY, TOO_BIG, TRY_LATER)  # every code the server ends a stream with
# A settings message is a few hundred characters, an API key included; parsing runs on the event loop,
# so a longer text (up to uvicorn's message limit, the upload limit) is refused unread.
SETTINGS_MAX_CHARS = 16 * 1024
KEY_REQUIRED = ("a valid API key is required: send it as the api_key field of the settings message, "
                "or as Authorization: Bearer <key> / X-API-Key")


class StreamClosed(Exception):
    """End the stream with a WebSocket close ``code`` and a ``reason`` a person can read."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


@router.websocket("/recolor/live")
async def recolor_live(websocket: WebSocket) -> None:
    """Accept first, then check: a browser sees a close code and reason, never a bare failed handshake."""
    app = websocket.app
    settings: Settings = app.state.settings
    await websocket.accept()
    engine: InferenceEngine | None = app.state.engine
    try:
        if engine is None:
            raise StreamClosed(TRY_LATER, f"not ready: {app.state.not_ready_reason}")
        if app.state.live_streams >= settings.live_max_streams:
            raise StreamClosed(TRY_LATER, f"{settings.live_max_streams} live streams are open; retry shortly")
        app.state.live_streams += 1
        app.state.metrics.live_streams.inc()
        try:
            await LiveConnection(websocket, engine, settings).run()
        finally:
            app.state.live_streams -= 1
            app.state.metrics.live_streams.dec()
    except StreamClosed as exc:
        app.state.metrics.live_closed.labels(str(exc.code)).inc()
        await _close(websocket, exc.code, exc.reason)
    except WebSocketDisconnect:
        pass


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    # a client that has gone, or reads nothing, must not hold the handler here
    with contextlib.suppress(asyncio.TimeoutError, RuntimeError, OSError, WebSocketDisconnect):
        await asyncio.wait_for(websocket.close(code, reason[:120]), 1.0)


class LiveConnection:
    """One viewer: reads messages, answers frames, reports stats; whichever stops first ends the others."""

    def __init__(self, websocket: WebSocket, engine: InferenceEngine, settings: Settings):
        self.ws, self.engine, self.settings = websocket, engine, settings
        self.authorized = api_key_valid(presented_key(websocket.headers) or None, settings)
        self.stream: LiveStream | None = None
        self.mailbox = LatestFrame()
        self.stats = StreamStats()
        self.frames_received = 0
        self._send_lock = asyncio.Lock()

    async def run(self) -> None:
        tasks = [asyncio.create_task(job()) for job in (self._read, self._answer, self._report)]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _read(self) -> None:
        while True:
            try:
                message = await asyncio.wait_for(self.ws.receive(), self.settings.live_idle_timeout_s)
            except TimeoutError:
                raise StreamClosed(POLICY, f"idle for {self.settings.live_idle_timeout_s:g} s") from None
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await self._on_frame(message["bytes"])
            elif message.get("text") is not None:
                await self._on_settings(message["text"])

    async def _on_settings(self, text: str) -> None:
        if len(text) > SETTINGS_MAX_CHARS:
            limit = SETTINGS_MAX_CHARS
            raise StreamClosed(TOO_BIG, f"settings message of {len(text)} characters; the limit is {limit}")
        if not self.authorized:
            self.authorized = api_key_valid(_field(text, "api_key"), self.settings)
            if not self.authorized:
                raise StreamClosed(POLICY, KEY_REQUIRED)
        try:
            options = parse_options(text)
        except ValueError as exc:
            await self._send_json({"type": "error", "error": "invalid_parameter", "detail": str(exc)})
            return
        if self.stream is None:
            self.stream = LiveStream(self.engine, self.settings, options)
        else:
            self.stream.options = options
        await self._send_json({"type": "settings", "settings": options.model_dump(exclude={"api_key"})})

    async def _on_frame(self, data: bytes) -> None:
        if not self.authorized:
            raise StreamClosed(POLICY, KEY_REQUIRED)
        if len(data) > self.settings.live_max_frame_bytes:
            limit = self.settings.live_max_frame_bytes
            raise StreamClosed(TOO_BIG, f"frame of {len(data)} bytes; the limit is {limit}")
        index, self.frames_received = self.frames_received, self.frames_received + 1
        if self.stream is None:
            await self._send_json({"type": "error", "error": "invalid_parameter",
                                   "detail": f"frame {index}: send the settings (a JSON text message) first"})
            return
        self.mailbox.put(Frame(data, index, time.perf_counter()))

    async def _answer(self) -> None:
        while True:
            frame = await self.mailbox.get()
            assert self.stream is not None
            try:
                jpeg = await self.stream.process(frame)
            except PayloadTooLarge as exc:
                raise StreamClosed(TOO_BIG, exc.detail) from None
            except (ApiError, QueueFullError, QueueTimeoutError) as exc:
                await self._send_error(frame, exc)
                continue
            except Exception as exc:  # one frame's failure must not end the stream
                log.exception("live frame %d failed", frame.index)
                await self._send_error(frame, exc)
                continue
            await self._send({"type": "websocket.send", "bytes": jpeg})
            self.stats.answered(frame)

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.settings.live_stats_every_s)
            if self.stream is not None:
                await self._send_json(self.stats.report(self.mailbox.dropped))

    async def _send_error(self, frame: Frame, exc: Exception) -> None:
        code = {QueueFullError: "overloaded", QueueTimeoutError: "timeout"}.get(type(exc), "inference_failed")
        code = exc.code if isinstance(exc, ApiError) else code
        detail = exc.detail if isinstance(exc, ApiError) else str(exc)
        await self._send_json({"type": "error", "error": code, "detail": f"frame {frame.index}: {detail}"})

    async def _send_json(self, body: dict) -> None:
        await self._send({"type": "websocket.send", "text": json.dumps(body)})

    async def _send(self, message: dict) -> None:
        """One sender at a time; a client that stops reading is closed instead of holding frames forever."""
        async with self._send_lock:
            try:
                await asyncio.wait_for(self.ws.send(message), self.settings.live_send_timeout_s)
            except TimeoutError:
                raise StreamClosed(POLICY, f"the client read nothing for {self.settings.live_send_timeout_s:g} s") \
                    from None


def _field(text: str, name: str) -> str | None:
    """One string field of a JSON object message, or None (the message is validated fully later)."""
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the interpreter's stack allows
        return None
    value = body.get(name) if isinstance(body, dict) else None
    return value if isinstance(value, str) else None
