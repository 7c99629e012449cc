"""Security: the API key (required on the model endpoints when set, optional on the operations endpoints),
logs without image data, and weights that are never unpickled."""

from __future__ import annotations

import json
import logging
import pickle
import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin

from face_parser.modeling import FaceParser
from service.app import create_app
from tests.conftest import draw_face, image_bytes, make_settings, png_bytes

REPO_ROOT = Path(__file__).resolve().parents[2]

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


# --- No image data in logs; no pickle anywhere ---------------------------------------------------------------

MARKER = "PIXELS-OF-A-PRIVATE-PHOTO"


def photo_with_marker(fmt: str) -> bytes:
    """A photo carrying MARKER in its metadata (PNG text chunk, JPEG comment)."""
    im = Image.fromarray(draw_face(48, seed=2)[0])
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", MARKER)
        return image_bytes(im, "PNG", pnginfo=info)
    return image_bytes(im, "JPEG", comment=MARKER.encode())


def test_logs_carry_the_request_id_and_never_image_data(make_client, caplog):
    client = make_client()
    caplog.set_level(logging.DEBUG)
    uploads = {"ok-png": photo_with_marker("PNG"), "ok-jpeg": photo_with_marker("JPEG"),
               "broken": MARKER.encode() * 20, "truncated": photo_with_marker("PNG")[:300]}
    for request_id, data in uploads.items():
        r = client.post("/parse", files={"image": ("a.png", data, "image/png")}, headers={"X-Request-ID": request_id})
        assert r.headers["x-request-id"] == request_id
        assert (r.status_code == 200) == request_id.startswith("ok"), r.text
    r = client.post("/recolor", data={"lip_color": "#c81e3c"}, headers={"X-Request-ID": "ok-recolor"},
                    files={"image": ("a.jpg", uploads["ok-jpeg"], "image/jpeg")})
    assert r.status_code == 200

    assert MARKER not in caplog.text
    assert all(MARKER not in str(record.args) for record in caplog.records)
    access = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "service.access"]
    assert [line["request_id"] for line in access] == [*uploads, "ok-recolor"]
    for line in access:
        assert set(line) == {"request_id", "method", "endpoint", "status", "ms"}


class Canary:
    """Unpickling this creates a file: proof that something unpickled it."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def test_pickled_weights_are_never_loaded(tiny_model_dir, tmp_path):
    """A model folder with only a pickle (``pytorch_model.bin``) is refused, unopened; /readyz says why."""
    folder = tmp_path / "pickled-model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    canary = tmp_path / "unpickled"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Canary(canary)))
    pickle.loads(pickle.dumps(Canary(tmp_path / "check")))  # the canary works
    assert (tmp_path / "check").exists()

    with pytest.raises(OSError, match="safetensors"):
        FaceParser.load(folder, device="cpu")
    with TestClient(create_app(make_settings(str(folder))), raise_server_exceptions=False) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and "safetensors" in r.text
    assert not canary.exists()


def test_no_code_path_unpickles():
    """Serving and the model core never call a pickle-based loader."""
    risky = re.compile(r"\bpickle\.loads?\(|\btorch\.load\(|allow_pickle\s*=\s*True|\bjoblib\.load\(|\bdill\.")
    for package in ("service", "face_parser"):
        for path in (REPO_ROOT / package).rglob("*.py"):
            hits = [ln for ln in path.read_text().splitlines() if risky.search(ln)]
            assert not hits, f"{path.relative_to(REPO_ROOT)}: {hits}"


def test_an_empty_api_key_means_no_key(monkeypatch):
    monkeypatch.setenv("FACEPARSE_API_KEY", "")
    from service.settings import Settings

    assert Settings().api_key is None
