"""Shared fixtures: tiny models built from configs, photos drawn by the tests, the app."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from face_parser.labels import CELEBAMASK_HQ_SCHEME
from face_parser.modeling import FaceParser, build_model, save_model_folder
from face_parser.preprocess import PreprocessConfig
from service.app import create_app
from service.settings import Settings

TINY_INPUT = 64


def draw_face(size: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A cartoon face and its CelebAMask-HQ label map: hair, skin, eyes, brows, nose, lips, neck, cloth."""
    rng = np.random.default_rng(seed)
    bg = tuple(int(v) for v in rng.integers(60, 200, 3))
    image = Image.new("RGB", (size, size), bg)
    mask = Image.new("L", (size, size), 0)
    di, dm = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    s = size / 256
    jitter = rng.integers(-6, 7, 2) * s
    cx, cy = size / 2 + jitter[0], size / 2 + jitter[1]

    def shape(kind, box, color, cid):
        box = [box[0] * s + cx, box[1] * s + cy, box[2] * s + cx, box[3] * s + cy]
        getattr(di, kind)(box, fill=color)
        getattr(dm, kind)(box, fill=cid)

    shape("rectangle", (-128, 80, 128, 128), (40, 90, 160), 18)       # cloth
    shape("rectangle", (-30, 50, 30, 100), (220, 170, 140), 17)        # neck
    shape("ellipse", (-80, -100, 80, 70), (60, 40, 30), 13)            # hair
    shape("ellipse", (-60, -70, 60, 80), (230, 180, 150), 1)           # skin
    shape("ellipse", (-40, -25, -15, -12), (250, 250, 250), 4)         # l_eye
    shape("ellipse", (15, -25, 40, -12), (250, 250, 250), 5)           # r_eye
    shape("rectangle", (-42, -38, -12, -32), (50, 30, 20), 6)          # l_brow
    shape("rectangle", (12, -38, 42, -32), (50, 30, 20), 7)            # r_brow
    shape("ellipse", (-8, -10, 8, 20), (200, 140, 120), 2)             # nose
    shape("ellipse", (-22, 30, 22, 40), (200, 40, 60), 11)             # u_lip
    shape("ellipse", (-22, 40, 22, 52), (180, 30, 50), 12)             # l_lip
    return np.asarray(image), np.asarray(mask)


def png_bytes(image_hwc: np.ndarray, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image_hwc).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """An exported (fp16) tiny random model folder: the shape of the real one, none of its skill."""
    torch.manual_seed(0)
    model = build_model("tiny", CELEBAMASK_HQ_SCHEME)
    out = tmp_path_factory.mktemp("tiny-model")
    save_model_folder(model, PreprocessConfig(size=TINY_INPUT), out, version="tiny-test", fp16=True)
    return str(out)


@pytest.fixture(scope="session")
def tiny_parser(tiny_model_dir) -> FaceParser:
    return FaceParser.load(tiny_model_dir, device="cpu")


def make_settings(model_dir: str, **overrides) -> Settings:
    base = dict(model_dir=model_dir, device="cpu", max_batch_size=4, max_batch_delay_ms=20, max_queue_size=16,
                request_timeout_s=20, max_upload_bytes=2 * 1024 * 1024, max_image_pixels=4_000_000)
    return Settings(**{**base, **overrides})


@pytest.fixture
def make_client(tiny_model_dir):
    """Factory: an entered TestClient (lifespan ran) over an app with the given settings overrides."""
    clients = []

    def factory(parser=None, **overrides) -> TestClient:
        client = TestClient(create_app(make_settings(tiny_model_dir, **overrides), parser=parser),
                            raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


@pytest.fixture(scope="session")
def face_png() -> bytes:
    return png_bytes(draw_face(200, seed=1)[0])
