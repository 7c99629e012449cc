"""The connection guard in a real uvicorn server on loopback: idle and slow request heads are cut, open
connections are bounded with a per-client share, a WebSocket keeps its slot until it closes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import pytest
import uvicorn
import websockets
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from benchmarks.servers import free_port
from service.connections import ConnectionGuard, guarded_protocol
from service.settings import Settings


async def hello(request):
    return JSONResponse({"hello": "world"})


async def echo(websocket):
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text)


@contextlib.asynccontextmanager
async def serving(**settings) -> AsyncIterator[tuple[int, ConnectionGuard, list[str]]]:
    """A uvicorn server with the guarded protocol on a free port: ``(port, guard, refusal reasons)``."""
    rejected: list[str] = []
    guard = ConnectionGuard(Settings(model_dir="unused", **settings), on_reject=rejected.append)
    app = Starlette(routes=[Route("/", hello), WebSocketRoute("/ws", echo)])
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=guarded_protocol(guard), lifespan="off",
                            log_level="warning", timeout_keep_alive=settings.get("keep_alive_timeout_s", 5))
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port, guard, rejected
    finally:
        server.should_exit = True
        await task


async def connect(port: int, source: str = "127.0.0.1"):
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def answer(reader: asyncio.StreamReader, timeout_s: float = 5.0) -> tuple[float, int | None, dict, dict]:
    """Read until the server closes: (seconds it took, status, headers, JSON body); status None when no answer."""
    start = time.monotonic()
    raw = await asyncio.wait_for(reader.read(), timeout_s)
    elapsed = time.monotonic() - start
    if not raw:
        return elapsed, None, {}, {}
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return elapsed, int(lines[0].split()[1]), headers, json.loads(body)


async def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout():
    async with serving(keep_alive_timeout_s=1) as (port, guard, _):
        reader, writer = await connect(port)
        elapsed, status, _, _ = await answer(reader)
        assert status is None and 0.9 <= elapsed < 1.5  # closed without an answer, as a keep-alive timeout
        writer.close()
        await asyncio.sleep(0.05)
        assert guard.connections.held == 0


async def test_headers_below_the_minimum_rate_get_408_within_the_header_deadline():
    async with serving(header_timeout_s=0.5, header_timeout_max_s=1.0) as (port, guard, rejected):
        reader, writer = await connect(port)
        start = time.monotonic()
        reading = asyncio.create_task(answer(reader))
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 50:
            if reading.done():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)
        _, status, headers, body = await reading
        assert status == 408 and body["error"] == "request_timeout" and headers["connection"] == "close"
        assert 0.5 <= time.monotonic() - start < 0.8
        assert rejected == ["slow_headers"]
        writer.close()
        await asyncio.sleep(0.05)
        assert guard.connections.held == 0


async def test_headers_that_keep_the_minimum_rate_are_given_more_time():
    async with serving(header_timeout_s=0.3, header_timeout_max_s=5.0, min_rate_bytes_s=100) as (port, _, rejected):
        reader, writer = await connect(port)
        head = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: " + b"a" * 260 + b"\r\n\r\n"
        start = time.monotonic()
        for i in range(0, len(head), 30):  # 300 bytes/s, for about a second
            writer.write(head[i:i + 30])
            await asyncio.sleep(0.1)
        _, status, _, body = await answer(reader)
        assert status == 200 and body == {"hello": "world"}
        assert time.monotonic() - start > 0.8 and rejected == []


async def test_open_connections_are_bounded_with_a_share_per_client():
    async with serving(max_connections=4, client_share=0.5, share_refusal_delay_s=0.3) as (port, guard, rejected):
        held = [await connect(port, "127.0.0.1") for _ in range(2)]
        reader, _ = await connect(port, "127.0.0.1")
        elapsed, status, headers, body = await answer(reader)
        assert status == 429 and headers["retry-after"] == "1" and body["error"] == "too_many_requests"
        assert 0.3 <= elapsed < 1.0  # held for the tarpit's delay, then answered
        assert guard.held == 0
        held += [await connect(port, "127.0.0.2") for _ in range(2)]  # another client still gets its share
        await asyncio.sleep(0.1)
        assert guard.connections.held == 4
        reader, _ = await connect(port, "127.0.0.3")
        _, status, headers, body = await answer(reader)
        assert status == 503 and headers["retry-after"] == "1" and body["error"] == "overloaded"
        assert rejected == ["connections_share", "connections"]
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.1)
        assert guard.connections.held == 0


async def test_the_tarpit_holds_at_most_max_connections_and_answers_the_rest_at_once():
    async with serving(max_connections=2, client_share=0.5, share_refusal_delay_s=5) as (port, guard, rejected):
        held = [await connect(port) for _ in range(3)]  # one in its share, two over it: both held
        await asyncio.sleep(0.2)
        assert guard.held == 2 and guard.connections.held == 1
        reader, _ = await connect(port)  # the tarpit is full: refused at once
        elapsed, status, _, _ = await answer(reader)
        assert status == 429 and elapsed < 1.0
        held[2][1].close()  # a held client that hangs up frees its place in the tarpit
        await asyncio.sleep(0.2)
        assert guard.held == 1 and rejected == ["connections_share"] * 3
        for _, writer in held[:2]:
            writer.close()
        await asyncio.sleep(0.2)
        assert guard.held == 0 and guard.connections.held == 0


async def test_a_websocket_holds_its_connection_slot_until_it_closes():
    async with serving(max_connections=4, client_share=0.25) as (port, guard, _):
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send("ping")
            assert await ws.recv() == "ping"
            assert guard.connections.held == 1
            reader, _ = await connect(port)  # the client's one slot is taken by its stream
            _, status, _, _ = await answer(reader)
            assert status == 429
        await asyncio.sleep(0.1)
        assert guard.connections.held == 0


async def test_a_refused_client_still_writing_reads_its_answer_instead_of_a_reset():
    """Closing with unread bytes sends a TCP reset, which can destroy the answer before the client reads it."""
    async with serving(max_connections=2, client_share=0.5) as (port, guard, _):
        held = await connect(port)
        reader, writer = await connect(port)  # over the share: refused as it arrives
        head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n"
        writer.write(head)
        for _ in range(20):  # the client goes on uploading for a while before it reads
            writer.write(b"x" * 65536)
            await writer.drain()
            await asyncio.sleep(0.01)
        _, status, headers, body = await answer(reader)
        assert status == 429 and body["error"] == "too_many_requests" and headers["connection"] == "close"
        writer.close()
        held[1].close()
        await asyncio.sleep(0.1)
        assert guard.connections.held == 0


def test_a_header_deadline_maximum_below_its_start_is_refused_with_both_names():
    with pytest.raises(ValidationError, match="HEADER_TIMEOUT_MAX_S=5.0 is below FACEPARSE_HEADER_TIMEOUT_S=10"):
        Settings(model_dir="unused", header_timeout_s=10, header_timeout_max_s=5)
