"""/healthz, /readyz, /v1/model, /metrics and the request id, through the ASGI app."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from tests.conftest import draw_face, make_settings, metric, png_bytes


@pytest.fixture(scope="module")
def api(make_module_client):
    return make_module_client()


def parse(client, **kw):
    """One whole-photo request: one item through the batcher (face finding would queue each face)."""
    return client.post("/parse", params={"faces": "whole"},
                       files={"image": ("a.png", png_bytes(draw_face(64)[0]), "image/png")}, **kw)


def test_healthz(api):
    r = api.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_when_ready(api):
    r = api.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "model_version": "tiny-test"}


def test_readyz_is_503_before_the_lifespan_ran(tiny_model_dir):
    client = TestClient(create_app(make_settings(tiny_model_dir)), raise_server_exceptions=False)  # not entered
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json() == {"status": "not_ready", "detail": "model is loading"}
    assert client.get("/healthz").status_code == 200  # alive all the same
    p = parse(client)
    assert p.status_code == 503 and p.json()["error"] == "not_ready"


def test_missing_model_dir_keeps_the_app_up_and_says_why(tmp_path):
    missing = tmp_path / "no-such-model"
    with TestClient(create_app(make_settings(str(missing))), raise_server_exceptions=False) as client:
        check_not_ready(client, str(missing))


def check_not_ready(client, missing: str):
    assert client.get("/healthz").status_code == 200
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["status"] == "not_ready" and missing in r.json()["detail"]
    for resp in (parse(client), client.get("/v1/model"),
                 client.post("/recolor", data={"lip_color": "#ff0000"},
                             files={"image": ("a.png", png_bytes(draw_face(64)[0]), "image/png")})):
        assert resp.status_code == 503
        assert resp.headers["retry-after"] == "5"
        assert resp.json()["error"] == "not_ready" and missing in resp.json()["detail"]


def test_model_info(api):
    r = api.get("/v1/model")
    assert r.status_code == 200
    body = r.json()
    assert body["version"] == "tiny-test"
    assert body["input_size"] == 64 and body["device"] == "cpu" and body["dtype"] == "float32"
    assert len(body["labels"]) == 19
    assert body["labels"][0] == {"id": 0, "name": "background", "display_name": "background", "color": [0, 0, 0]}
    assert body["labels"][11]["name"] == "u_lip" and body["labels"][11]["display_name"] == "upper lip"
    assert all(len(label["color"]) == 3 and all(0 <= c <= 255 for c in label["color"]) for label in body["labels"])
    assert [label["id"] for label in body["labels"]] == list(range(19))
    assert body["class_log_bias"] == {}  # the tiny folder carries no calibration (test_parse_route: one that does)
    assert body["batching"] == {"inference_workers": 1, "max_batch_size": 4, "max_batch_delay_ms": 20.0,
                                "max_queue_size": 16, "request_timeout_s": 20.0}


def test_metrics_exposes_the_faceparse_families_and_counts_requests(make_client):
    client = make_client()
    assert parse(client).status_code == 200
    assert client.get("/no/such/path").status_code == 404
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for family in ("faceparse_requests", "faceparse_request_latency_seconds", "faceparse_queue_wait_seconds",
                   "faceparse_batch_size", "faceparse_inference_seconds", "faceparse_batch_failures",
                   "faceparse_queue_depth", "faceparse_rejected", "faceparse_model_info"):
        assert re.search(rf"^# TYPE {family}(_total)? (counter|gauge|histogram)$", text, re.M), family
    assert metric(text, "faceparse_requests_total", endpoint="/parse", status="200") == 1
    assert metric(text, "faceparse_requests_total", endpoint="other", status="404") == 1  # raw paths never leak
    assert "/no/such/path" not in text
    assert metric(text, "faceparse_batch_size_count") == 1
    assert metric(text, "faceparse_inference_seconds_count") == 1
    assert metric(text, "faceparse_queue_wait_seconds_count") == 1
    assert metric(text, "faceparse_queue_depth") == 0
    assert metric(text, "faceparse_batch_failures_total") == 0
    assert metric(text, "faceparse_model_info", version="tiny-test", device="cpu", dtype="float32") == 1
    assert metric(text, "faceparse_request_latency_seconds_count", endpoint="/parse") == 1


def test_request_id_is_generated_when_absent(api):
    r1, r2 = api.get("/healthz"), api.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", r1.headers["x-request-id"])
    assert r1.headers["x-request-id"] != r2.headers["x-request-id"]


def test_request_id_is_echoed_when_sent(api):
    assert api.get("/healthz", headers={"X-Request-ID": "trace-abc-123"}).headers["x-request-id"] == "trace-abc-123"
    r = parse(api, headers={"X-Request-ID": "parse-42"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "parse-42"
    err = api.post("/parse", headers={"X-Request-ID": "bad-1"})
    assert err.status_code == 422 and err.headers["x-request-id"] == "bad-1"


def test_unreasonable_request_ids_are_replaced(api):
    sent = "x" * 65
    got = api.get("/healthz", headers={"X-Request-ID": sent}).headers["x-request-id"]
    assert got != sent and re.fullmatch(r"[0-9a-f]{32}", got)


def test_a_bf16_service_on_the_cpu_says_so_and_parses_like_float32(make_client, face_png):
    """FACEPARSE_DTYPE=bfloat16 (what ``auto`` picks on a CPU with bf16 instructions): the same answers to
    within a few boundary pixels of a random model, and the dtype in /v1/model and the model-info metric."""
    half, full = make_client(dtype="bfloat16"), make_client()
    assert half.get("/v1/model").json()["dtype"] == "bfloat16"
    assert metric(half.get("/metrics").text, "faceparse_model_info", version="tiny-test", device="cpu",
                  dtype="bfloat16") == 1
    answers = [c.post("/parse", params={"faces": "whole"}, files={"image": ("f.png", face_png, "image/png")})
               for c in (half, full)]
    assert [a.status_code for a in answers] == [200, 200]
    labels = [np.asarray(Image.open(io.BytesIO(a.content))) for a in answers]
    assert labels[0].shape == labels[1].shape == (200, 200)
    assert (labels[0] == labels[1]).mean() > 0.9
