"""Overload and faults through the ASGI app: a full queue answers 503 fast, a slow model 504, a failing
batch 500 for its own requests only; in every case the service recovers and the metrics agree."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from prometheus_client import generate_latest

from face_parser.modeling import FaceParser
from service.app import create_app
from tests.conftest import draw_face, make_settings, metric, parser_like, png_bytes


class SlowParser(FaceParser):
    """The tiny model with a slow forward pass."""

    delay_s = 0.2

    def scores(self, pixel_values_bchw, flip=False):
        time.sleep(self.delay_s)
        return super().scores(pixel_values_bchw)


class FlakyParser(FaceParser):
    """The tiny model, except that the next ``fail_batches`` forward passes raise."""

    fail_batches = 0
    batch_sizes: list

    def scores(self, pixel_values_bchw, flip=False):
        self.batch_sizes.append(pixel_values_bchw.shape[0])
        if self.fail_batches > 0:
            self.fail_batches -= 1
            raise RuntimeError("CUDA error: device-side assert triggered")
        return super().scores(pixel_values_bchw)


@pytest.fixture(scope="module")
def image() -> bytes:
    return png_bytes(draw_face(64, seed=3)[0])


def post(client, image: bytes):
    start = time.perf_counter()
    r = client.post("/parse", params={"faces": "whole"}, files={"image": ("a.png", image, "image/png")})
    return r, time.perf_counter() - start


def burst(client, image: bytes, n: int):
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(post, client, image) for _ in range(n)]
        return [f.result(timeout=60) for f in futures]


def wait_for_metric(client, name: str, value: float, timeout_s: float = 5.0) -> float | None:
    deadline = time.perf_counter() + timeout_s
    while True:
        got = metric(client.get("/metrics").text, name)
        if got == value or time.perf_counter() > deadline:
            return got
        time.sleep(0.05)


def test_burst_beyond_capacity_gets_200_503_or_504_and_recovers(make_client, tiny_parser, image):
    timeout_s = 4.0
    # max_faces=1: one queue slot per request (a queue of 4 cannot hold a photo's 16 faces).
    client = make_client(parser=parser_like(tiny_parser, SlowParser), max_queue_size=4, max_batch_size=1,
                         max_batch_delay_ms=0, request_timeout_s=timeout_s, max_faces=1)
    expected = post(client, image)[0].content
    results = burst(client, image, 40)  # 10x the queue

    statuses = [r.status_code for r, _ in results]
    assert set(statuses) <= {200, 503, 504}, statuses
    assert statuses.count(503) > 0 and statuses.count(200) > 0
    for r, elapsed in results:
        assert elapsed < timeout_s + 3.0  # nobody hangs past the request timeout
        if r.status_code == 200:
            assert r.content == expected  # a correct answer, not someone else's
        else:
            assert set(r.json()) == {"error", "detail"}
        if r.status_code == 503:
            assert r.json()["error"] == "overloaded" and r.headers["retry-after"] == "1"
        if r.status_code == 504:
            assert r.json()["error"] == "timeout"
    rejected_fast = [elapsed for r, elapsed in results if r.status_code == 503]
    assert min(rejected_fast) < 1.0  # a full queue answers at once

    assert wait_for_metric(client, "faceparse_queue_depth", 0) == 0
    text = client.get("/metrics").text
    # refused at the door (in flight) or, rarely, by the batcher's queue: every 503 is counted once
    refused = [metric(text, "faceparse_rejected_total", reason=r) or 0 for r in ("in_flight", "queue_full")]
    assert sum(refused) == statuses.count(503) and refused[0] > 0
    assert metric(text, "faceparse_requests_total", endpoint="/parse", status="503") == statuses.count(503)
    after, _ = post(client, image)
    assert after.status_code == 200 and after.content == expected


def test_a_short_request_timeout_gives_504(make_client, tiny_parser, image):
    """The answer comes at the deadline, before the model would have finished. The deadline leaves a whole
    request (decode, a tiny pass, encode) room to spare once the model is fast: at 50 ms it did not, on a
    loaded 2-core CI machine."""
    slow = parser_like(tiny_parser, SlowParser, delay_s=1.0)
    client = make_client(parser=slow, request_timeout_s=0.3)
    r, elapsed = post(client, image)
    assert r.status_code == 504
    assert r.json()["error"] == "timeout" and "0.3" in r.json()["detail"]
    assert elapsed < 1.0
    assert metric(client.get("/metrics").text, "faceparse_rejected_total", reason="timeout") == 1
    slow.delay_s = 0.0  # the same service, now with a model fast enough for its deadline
    time.sleep(1.0)  # let the abandoned slow batch finish
    assert post(client, image)[0].status_code == 200


def test_a_failing_batch_fails_only_its_requests(make_client, tiny_parser, image):
    parser = parser_like(tiny_parser, FlakyParser, batch_sizes=[])
    client = make_client(parser=parser, max_batch_size=4, max_batch_delay_ms=300)
    parser.batch_sizes.clear()  # forget the warm-up
    parser.fail_batches = 1
    images = [png_bytes(draw_face(64, seed=s)[0]) for s in range(3)]
    with ThreadPoolExecutor(3) as pool:
        failed = list(pool.map(lambda data: post(client, data)[0], images))
    assert parser.batch_sizes == [3]  # one batch held all three
    for r in failed:
        assert r.status_code == 500
        body = r.json()
        assert body["error"] == "inference_failed" and "device-side assert" in body["detail"]
    ok = post(client, image)[0]
    assert ok.status_code == 200
    assert Image.open(io.BytesIO(ok.content)).size == (64, 64)
    text = client.get("/metrics").text
    assert metric(text, "faceparse_batch_failures_total") == 1
    assert metric(text, "faceparse_requests_total", endpoint="/parse", status="500") == 3
    assert metric(text, "faceparse_requests_total", endpoint="/parse", status="200") == 1


def test_health_checks_answer_while_the_model_is_busy(make_client, tiny_parser, image):
    client = make_client(parser=parser_like(tiny_parser, SlowParser, delay_s=0.6), max_batch_delay_ms=0)
    worker = threading.Thread(target=post, args=(client, image))
    worker.start()
    time.sleep(0.2)  # the forward pass is now running in a worker thread
    start = time.perf_counter()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert time.perf_counter() - start < 0.6
    worker.join(10)
    assert not worker.is_alive()


def test_unexpected_errors_are_json_500_with_the_request_id(make_client, image, monkeypatch):
    client = make_client()
    import service.routes.parse as parse_route

    def broken(*args, **kwargs):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(parse_route, "render", broken)
    r = client.post("/parse", files={"image": ("a.png", image, "image/png")}, headers={"X-Request-ID": "req-9"})
    assert r.status_code == 500
    assert r.json() == {"error": "internal_error", "detail": "unexpected server error (request id req-9)"}
    assert r.headers["X-Request-ID"] == "req-9"  # as on every other answer
    assert "ZeroDivisionError" not in r.text
    monkeypatch.undo()
    assert post(client, image)[0].status_code == 200
    assert np.asarray(Image.open(io.BytesIO(post(client, image)[0].content))).shape == (64, 64)


async def test_a_client_that_hangs_up_while_queued_costs_no_inference(tiny_model_dir, image):
    """Driven as raw ASGI: the request body, then (once the request is queued) ``http.disconnect``."""
    app = create_app(make_settings(tiny_model_dir, max_batch_size=8, max_batch_delay_ms=500))
    boundary = "fuzzyboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/parse", "raw_path": b"/parse", "root_path": "", "query_string": b"",
             "server": ("test", 80), "client": ("127.0.0.1", 5000),
             "headers": [(b"host", b"test"), (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
                         (b"content-length", str(len(body)).encode())]}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    hung_up, sent = asyncio.Event(), []

    async def receive():
        if messages:
            return messages.pop(0)
        await hung_up.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    def depth() -> float | None:
        return metric(generate_latest(app.state.metrics.registry).decode(), "faceparse_queue_depth")

    async with app.router.lifespan_context(app):
        batcher = app.state.engine.batcher
        call = asyncio.create_task(app(scope, receive, send))
        for _ in range(200):
            if depth() == 1:
                break
            await asyncio.sleep(0.005)
        assert depth() == 1, "the request never got queued"
        hung_up.set()
        await asyncio.wait_for(call, 2.0)
        await asyncio.sleep(0.7)  # the batch window (0.5 s) has closed
        assert batcher.batches_run == 0  # the forward pass never ran for it
        assert depth() == 0
    assert sent[0]["status"] == 499
    text = generate_latest(app.state.metrics.registry).decode()
    assert metric(text, "faceparse_requests_total", endpoint="/parse", status="499") == 1
    assert metric(text, "faceparse_batch_size_count") == 0


def test_a_request_queued_at_shutdown_gets_503_shutting_down(make_client, tiny_parser, image):
    """Shutting down is not a timeout: the queued request is told to retry elsewhere, at once."""
    slow = parser_like(tiny_parser, SlowParser, delay_s=0.5)
    client = make_client(parser=slow, max_batch_size=1, max_batch_delay_ms=0, request_timeout_s=20)
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(post, client, image)
        assert wait_for_metric(client, "faceparse_batch_size_count", 1) == 1  # the first is in the model
        queued = pool.submit(post, client, image)
        assert wait_for_metric(client, "faceparse_queue_depth", 1) == 1
        client.portal.call(client.app.state.engine.batcher.stop, 0.0)  # what the lifespan does, drain timed out
        for r, elapsed in (running.result(timeout=10), queued.result(timeout=10)):
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "shutting_down" and "shut down" in r.json()["detail"]
            assert r.headers["Retry-After"] == "1"
            assert elapsed < 5.0
