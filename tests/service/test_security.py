"""API key: required on the model endpoints when set, optional on the operations endpoints."""

from __future__ import annotations

import pytest

from tests.conftest import draw_face, png_bytes

KEY = "k"


@pytest.fixture(scope="module")
def image() -> bytes:
    return png_bytes(draw_face(48, seed=1)[0])


@pytest.fixture(scope="module")
def keyed(make_module_client):
    return make_module_client(api_key=KEY)


@pytest.fixture(scope="module")
def keyed_ops(make_module_client):
    return make_module_client(api_key=KEY, protect_ops_endpoints=True)


def call(client, endpoint: str, image: bytes, headers=None):
    files = {"image": ("a.png", image, "image/png")}
    if endpoint == "parse":
        return client.post("/parse", files=files, headers=headers)
    if endpoint == "recolor":
        return client.post("/recolor", data={"hair_color": "#3050d0"}, files=files, headers=headers)
    return client.get("/v1/model", headers=headers)


def assert_unauthorized(r):
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized" and "API key" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("endpoint", ["parse", "recolor", "model"])
@pytest.mark.parametrize("headers", [None, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"},
                                     {"Authorization": "k"}, {"Authorization": "Basic k"}, {"X-API-Key": ""},
                                     {"Authorization": "Bearer k2"}, {"Authorization": "Bearer "}],
                         ids=["none", "wrong-bearer", "wrong-x-api-key", "no-scheme", "basic", "empty",
                              "longer", "empty-bearer"])
def test_model_endpoints_refuse_a_missing_or_wrong_key(keyed, image, endpoint, headers):
    assert_unauthorized(call(keyed, endpoint, image, headers))


@pytest.mark.parametrize("endpoint", ["parse", "recolor", "model"])
@pytest.mark.parametrize("headers", [{"Authorization": "Bearer k"}, {"authorization": "bearer k"},
                                     {"X-API-Key": "k"}], ids=["bearer", "bearer-lowercase", "x-api-key"])
def test_model_endpoints_accept_the_key(keyed, image, endpoint, headers):
    r = call(keyed, endpoint, image, headers)
    assert r.status_code == 200, r.text


def test_refused_requests_cost_no_inference(keyed, image):
    batcher = keyed.app.state.engine.batcher
    before = batcher.batches_run
    assert_unauthorized(call(keyed, "parse", image))
    assert batcher.batches_run == before


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_ops_endpoints_are_open_by_default(keyed, path):
    assert keyed.get(path).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_ops_endpoints_need_the_key_when_protected(keyed_ops, path):
    assert_unauthorized(keyed_ops.get(path))
    assert keyed_ops.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert keyed_ops.get(path, headers={"X-API-Key": KEY}).status_code == 200


def test_without_a_key_configured_everything_is_open(make_module_client, image):
    open_client = make_module_client()
    assert call(open_client, "parse", image).status_code == 200
    assert call(open_client, "parse", image, {"Authorization": "Bearer anything"}).status_code == 200
