"""The real server: ``python -m service`` (uvicorn) on a loopback port, with the tiny exported model.

What only a real server shows: the CLI and settings from the environment, HTTP over a socket, batching
of requests from separate connections, and a client that hangs up while queued costing no inference.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.conftest import draw_face, metric, png_bytes

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 90.0
BATCH_DELAY_MS = 1000  # the settings' maximum: a request waits this long for companions in its batch


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "<no server log>"


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    """(base_url, port, log path) of a ready server; always terminated afterwards."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("service_server") / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEPARSE_")}
    env.update(FACEPARSE_MODEL_DIR=str(tiny_model_dir), FACEPARSE_DEVICE="cpu", FACEPARSE_TORCH_THREADS="1",
               FACEPARSE_MAX_BATCH_SIZE="8", FACEPARSE_MAX_BATCH_DELAY_MS=str(BATCH_DELAY_MS),
               FACEPARSE_LOG_LEVEL="warning", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with code {proc.returncode} before it was ready:\n{log_tail(log_path)}")
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready within {READY_TIMEOUT_S:.0f} s:\n{log_tail(log_path)}")
            time.sleep(0.2)
        yield base, port, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def metrics(base: str) -> str:
    return httpx.get(base + "/metrics", timeout=10).text


def batches(base: str) -> tuple[float, float, float]:
    """(forward passes, requests in them, inference timings) so far."""
    text = metrics(base)
    return (metric(text, "faceparse_batch_size_count"), metric(text, "faceparse_batch_size_sum"),
            metric(text, "faceparse_inference_seconds_count"))


def parse(base: str, data: bytes, **kw) -> httpx.Response:
    return httpx.post(base + "/parse", files={"image": ("a.png", data, "image/png")}, timeout=30, **kw)


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
    head = (f"POST /parse HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; "
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
