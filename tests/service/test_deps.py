"""The shared dependencies: none waits for a worker thread, so /healthz answers while every one is busy."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, wait

import service.deps
from tests.conftest import draw_face, png_bytes

WORKERS = 2


def test_healthz_answers_while_every_worker_thread_is_held(make_client, monkeypatch):
    client = make_client(worker_threads=WORKERS)
    release, all_held = threading.Event(), threading.Barrier(WORKERS + 1)
    decode = service.deps.decode_image

    def held_decode(data: bytes, max_pixels: int):
        all_held.wait()
        release.wait()
        return decode(data, max_pixels)

    monkeypatch.setattr(service.deps, "decode_image", held_decode)
    photo = png_bytes(draw_face(64)[0])
    with ThreadPoolExecutor(WORKERS + 1) as pool:
        parses = [pool.submit(client.post, "/parse", params={"faces": "whole"},
                              files={"image": ("photo.png", photo, "image/png")}) for _ in range(WORKERS)]
        try:
            all_held.wait(timeout=30)  # every worker thread now holds a decode
            health = pool.submit(client.get, "/healthz")
            # a bound on a deadlock, not a timing: before the fix /healthz waited for a thread until the release
            answered_while_held = health in wait([health], timeout=10).done
        finally:
            release.set()
    assert answered_while_held and health.result().status_code == 200
    assert [p.result().status_code for p in parses] == [200] * WORKERS
