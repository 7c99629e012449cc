"""WS /recolor/live on the real server (uvicorn, loopback) under hostile streams.

While one well-behaved viewer streams, others send malformed frames, oversized frames, a flood
without ever reading, and hang up abruptly mid-frame. The well-behaved viewer keeps getting
answers, each hostile stream ends the way the protocol says, and the server's resident memory is
back near its level once the streams are gone.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import numpy as np
import pytest
import websockets

from benchmarks.live import answered_index, astronaut_frames, jpeg_bytes
from benchmarks.servers import running, service_spec
from benchmarks.soak import rss_mb
from tests.conftest import metric

pytestmark = pytest.mark.slow

WHOLE = json.dumps({"lip_color": "#2050e0", "faces": "whole"})


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    spec = service_spec(tiny_model_dir, device="cpu", torch_threads=1, log_level="warning", live_send_timeout_s=2,
                        live_max_frame_bytes=400_000, idle_trim_s=0.5)
    with running(spec, tmp_path_factory.mktemp("live_server") / "server.log", 90) as srv:
        yield srv


def ws_url(server) -> str:
    return server.base_url.replace("http://", "ws://") + "/recolor/live"


async def good_viewer(url: str, frame: bytes, stop: asyncio.Event) -> list[float]:
    """Stream one frame at a time until ``stop``; the times its answers arrived."""
    answers = []
    async with websockets.connect(url) as ws:
        await ws.send(WHOLE)
        await ws.recv()
        index = 0
        while not stop.is_set():
            await ws.send(frame)
            while True:
                message = await asyncio.wait_for(ws.recv(), 10)
                if isinstance(message, bytes):
                    assert answered_index(message) == index
                    answers.append(time.monotonic())
                    break
            index += 1
    return answers


async def close_code(ws) -> int:
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 20)
    return ws.close_code


async def malformed(url: str) -> None:
    async with websockets.connect(url) as ws:
        await ws.send(WHOLE)
        await ws.recv()
        for junk in (b"", b"\xff\xd8\xff garbage", b"GIF89a" + b"\0" * 64, np.random.bytes(5000)):
            await ws.send(junk)
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if message["type"] == "error":
                    break


async def oversized(url: str) -> int:
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(WHOLE)
        await ws.recv()
        await ws.send(b"\xff\xd8" + b"\0" * 500_000)
        return await close_code(ws)


def policy_closes(server) -> float:
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    return metric(text, "faceparse_live_closed_total", code="1008") or 0.0


def small_receive_buffer_socket(server) -> socket.socket:
    """A client socket whose kernel takes in at most ~64 KiB unread: what the server meets is then its own
    write buffer, whatever this machine's TCP autotuning allows a reader."""
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.connect((host, int(port)))
    return sock


async def flood_never_reading(server, frame: bytes) -> float:
    """Send frames fast and never read a byte; how long until the server has ended the stream (its slot freed).

    Its close frame sits behind the answers never read, so the connection itself is only dropped here.
    No other stream of the round is closed for policy (1008), so the counter of those names this one.
    """
    ws = await websockets.connect(ws_url(server), max_size=None, sock=small_receive_buffer_socket(server))
    await ws.send(WHOLE)
    await ws.recv()
    closed_before = await asyncio.to_thread(policy_closes, server)
    ws.transport.pause_reading()
    start = time.monotonic()

    async def flood() -> None:
        while True:
            await ws.send(frame)
            await asyncio.sleep(0.002)

    flooding = asyncio.create_task(flood())
    try:
        while time.monotonic() < start + 30 and await asyncio.to_thread(policy_closes, server) == closed_before:
            await asyncio.sleep(0.25)
        return time.monotonic() - start
    finally:
        flooding.cancel()
        ws.transport.abort()


async def hang_up_mid_frame(url: str, frame: bytes) -> None:
    for _ in range(5):
        ws = await websockets.connect(url)
        await ws.send(WHOLE)
        await ws.send(frame)
        ws.transport.abort()  # no close handshake


async def hostile_round(server) -> tuple[list[float], int, float, float]:
    url = ws_url(server)
    big_frame = jpeg_bytes(astronaut_frames(1, 480)[0])
    stop = asyncio.Event()
    viewer = asyncio.create_task(good_viewer(url, jpeg_bytes(astronaut_frames(1, 160)[0]), stop))
    await asyncio.sleep(1.0)
    start = time.monotonic()
    _, too_big, flooded, _ = await asyncio.gather(
        malformed(url), oversized(url), flood_never_reading(server, big_frame), hang_up_mid_frame(url, big_frame))
    hostile_s = time.monotonic() - start
    await asyncio.sleep(1.0)
    stop.set()
    answers = await viewer
    return [t for t in answers if start <= t <= start + hostile_s], too_big, flooded, hostile_s


def test_hostile_streams_leave_the_other_viewers_served(server):
    asyncio.run(hostile_round(server))  # warm-up: allocator pools, JPEG buffers, first faces
    time.sleep(2)
    before = rss_mb(server.pid)
    during, too_big, flooded, hostile_s = asyncio.run(hostile_round(server))
    assert too_big == 1009
    assert flooded < 10, f"a client that reads nothing was served for {flooded:.0f} s (send timeout 2 s)"
    assert len(during) >= 0.3 * hostile_s, f"{len(during)} answers in {hostile_s:.1f} s of hostile streams"
    time.sleep(3)
    assert rss_mb(server.pid) < before + 40, (before, rss_mb(server.pid))
