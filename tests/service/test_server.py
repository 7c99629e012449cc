"""The real server: ``python -m service`` (uvicorn) on a loopback port, with the tiny exported model.

What only a real server shows: the CLI and settings from the environment, HTTP over a socket, batching
of requests from separate connections, and a client that hangs up while queued costing no inference.
"""

from __future__ import annotations

import io
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from tests.conftest import draw_face, metric, png_bytes
from tests.live_server import live_server, log_tail

pytestmark = pytest.mark.slow

BATCH_DELAY_MS = 1000  # the settings' maximum: a request waits this long for companions in its batch


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    """(base_url, port, log path) of a ready server; always terminated afterwards."""
    log_path = tmp_path_factory.mktemp("service_server") / "server.log"
    with live_server(tiny_model_dir, log_path, device="cpu", torch_threads=1, max_batch_size=8,
                     max_batch_delay_ms=BATCH_DELAY_MS, log_level="warning") as (base, port):
        yield base, port, log_path


def metrics(base: str) -> str:
    return httpx.get(base + "/metrics", timeout=10).text


def batches(base: str) -> tuple[float, float, float]:
    """(forward passes, requests in them, inference timings) so far."""
    text = metrics(base)
    return (metric(text, "faceparse_batch_size_count"), metric(text, "faceparse_batch_size_sum"),
            metric(text, "faceparse_inference_seconds_count"))


def parse(base: str, data: bytes, **kw) -> httpx.Response:
    """One whole-photo request: one item through the batcher (face finding would queue each face)."""
    return httpx.post(base + "/parse", params={"faces": "whole"}, files={"image": ("a.png", data, "image/png")},
                      timeout=30, **kw)


def test_a_real_request_over_loopback(server):
    base, _, _ = server
    assert httpx.get(base + "/healthz", timeout=5).json() == {"status": "ok"}
    r = parse(base, png_bytes(draw_face(90, seed=1)[0]), headers={"X-Request-ID": "loopback-1"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.headers["x-request-id"] == "loopback-1"
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.mode == "P" and im.size == (90, 90)
    info = httpx.get(base + "/v1/model", timeout=5).json()
    assert info["version"] == "tiny-test" and info["batching"]["max_batch_delay_ms"] == BATCH_DELAY_MS


def test_requests_on_separate_connections_share_a_forward_pass(server):
    base, _, _ = server
    before = batches(base)
    images = [png_bytes(draw_face(60 + 10 * i, seed=i)[0]) for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda data: parse(base, data), images))
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert [Image.open(io.BytesIO(r.content)).size for r in answers] == [(60, 60), (70, 70), (80, 80)]
    after = batches(base)
    assert after[0] - before[0] == 1 and after[1] - before[1] == 3  # one forward pass for three requests


def raw_parse_request(port: int, data: bytes) -> bytes:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /parse?faces=whole HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; "
            f"boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def wait_for(predicate, timeout_s: float, poll_s: float = 0.02):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    return None


def test_a_client_that_hangs_up_while_queued_costs_no_inference(server):
    """The request waits in its batch window (1 s); the client closes the socket; no forward pass runs.

    Deterministic: the socket is closed only once /metrics shows the request queued, and the batch
    window is far longer than the service's 50 ms disconnect poll.
    """
    base, port, log_path = server
    before = batches(base)
    assert metric(metrics(base), "faceparse_queue_depth") == 0
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(raw_parse_request(port, png_bytes(draw_face(64, seed=4)[0])))
        queued = wait_for(lambda: metric(metrics(base), "faceparse_queue_depth") == 1, timeout_s=BATCH_DELAY_MS / 1000)
        assert queued, "the request never showed up in the queue"
    finally:
        sock.close()  # hang up while queued
    time.sleep(BATCH_DELAY_MS / 1000 + 0.5)  # the batch window has closed
    assert wait_for(lambda: metric(metrics(base), "faceparse_queue_depth") == 0, timeout_s=5)
    assert batches(base) == before  # no forward pass, no inference time spent on it
    text = metrics(base)
    assert metric(text, "faceparse_requests_total", endpoint="/parse", status="499") == 1
    assert metric(text, "faceparse_requests_total", endpoint="/parse", status="500") is None  # not a server error
    assert "Exception in ASGI application" not in log_tail(log_path, 100_000)

    r = parse(base, png_bytes(draw_face(64, seed=4)[0]))  # and the service goes on
    assert r.status_code == 200
    after = batches(base)
    assert after[0] == before[0] + 1 and after[1] == before[1] + 1
