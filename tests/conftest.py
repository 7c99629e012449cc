"""Shared fixtures: tiny models built from configs, photos drawn by the tests, the app."""

from __future__ import annotations

import io
from pathlib import Path

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


def write_cartoon_set(root: Path, n: int, size: int = 96) -> None:
    """A dataset folder (``images/``, ``masks/``) of ``n`` :func:`draw_face` pairs, as the folder loader reads it."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image, mask = draw_face(size, seed=i)
        Image.fromarray(image).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:03d}.png")


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
def tiny_m2f_dir(tmp_path_factory) -> str:
    """The same as :func:`tiny_model_dir`, a Mask2Former (``build_model("tiny-m2f")``)."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-m2f")
    save_model_folder(build_model("tiny-m2f", CELEBAMASK_HQ_SCHEME), PreprocessConfig(size=TINY_INPUT), out,
                      version="tiny-m2f-test", fp16=True)
    return str(out)


@pytest.fixture(scope="session")
def tiny_parser(tiny_model_dir) -> FaceParser:
    """float32 on every machine (``auto`` is bf16 only on CPUs with bf16 instructions: test_modeling.py)."""
    return FaceParser.load(tiny_model_dir, device="cpu", dtype="float32")


def make_settings(model_dir: str, **overrides) -> Settings:
    """Small bounds for fast tests. ``client_share=1``: a test client is one client for all its requests, so the
    service's bounds, not one client's share of them, are what these tests meet (the share has tests of its own)."""
    base = dict(model_dir=model_dir, device="cpu", dtype="float32", inference_workers=1, max_batch_size=4,
                max_batch_delay_ms=20, max_queue_size=16, request_timeout_s=20, max_upload_bytes=2 * 1024 * 1024,
                max_image_pixels=4_000_000, client_share=1.0)
    return Settings(**{**base, **overrides})


def client_factory(model_dir: str):
    """``(factory, close)``: the factory returns entered TestClients (lifespan ran); close exits them."""
    clients = []

    def factory(parser=None, detector=None, **overrides) -> TestClient:
        client = TestClient(create_app(make_settings(model_dir, **overrides), parser=parser, detector=detector),
                            raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    def close() -> None:
        for c in clients:
            c.__exit__(None, None, None)

    return factory, close


@pytest.fixture
def make_client(tiny_model_dir):
    """Factory: an entered TestClient over an app with the given settings overrides."""
    factory, close = client_factory(tiny_model_dir)
    yield factory
    close()


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


@pytest.fixture(scope="session")
def face_png() -> bytes:
    return png_bytes(draw_face(200, seed=1)[0])


# --- service suite helpers (tests/service/) ---------------------------------------------------------------

# draw_face's flat colours, by CelebAMask-HQ class name: what OracleParser recognises.
DRAW_FACE_COLORS = {
    "cloth": (40, 90, 160), "neck": (220, 170, 140), "hair": (60, 40, 30), "skin": (230, 180, 150),
    "l_eye": (250, 250, 250), "l_brow": (50, 30, 20), "nose": (200, 140, 120),
    "u_lip": (200, 40, 60), "l_lip": (180, 30, 50),
}


class OracleParser(FaceParser):
    """A parser that knows draw_face's colours: rich, image-specific label maps with no learned weights.

    Scores are Gaussian in colour distance to each class colour (background a small constant), computed
    per image, per pixel, then averaged over 4x4 cells to 1/4 of the input like MaskFormer's: a cell on a
    boundary scores for both of its classes, as a model's does. Computed per image, so batching cannot mix
    images up unnoticed.
    """

    sigma = 0.04

    @torch.inference_mode()
    def scores(self, pixel_values_bchw: torch.Tensor, flip: bool = False) -> torch.Tensor:
        mean = torch.tensor(self.preprocess.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocess.std).view(1, 3, 1, 1)
        rgb = pixel_values_bchw.float() * std + mean
        out = torch.zeros(rgb.shape[0], len(self.labels), *rgb.shape[-2:])
        out[:, 0] = 0.02
        for name, color in DRAW_FACE_COLORS.items():
            dist2 = ((rgb - torch.tensor(color).view(1, 3, 1, 1) / 255.0) ** 2).sum(dim=1)
            out[:, self.labels.id_of(name)] = torch.exp(-dist2 / (2 * self.sigma**2))
        return torch.nn.functional.avg_pool2d(out, 4)


def parser_like(parser: FaceParser, cls: type, **changes) -> FaceParser:
    """An instance of ``cls`` (a FaceParser subclass) sharing ``parser``'s fields; ``changes`` set fields or
    the subclass's own attributes."""
    fields = {name: getattr(parser, name) for name in FaceParser.__dataclass_fields__}
    made = cls(**{**fields, **{k: v for k, v in changes.items() if k in fields}})
    for name, value in changes.items():
        if name not in fields:
            setattr(made, name, value)
    return made


@pytest.fixture(scope="session")
def oracle_parser(tiny_parser) -> FaceParser:
    """OracleParser at a 128 input (32x32 score maps) with the tiny model's labels."""
    return parser_like(tiny_parser, OracleParser, preprocess=PreprocessConfig(size=128))


@pytest.fixture(scope="module")
def make_module_client(tiny_model_dir):
    """Like ``make_client`` but the clients live for the whole test module (one model warm-up)."""
    factory, close = client_factory(tiny_model_dir)
    yield factory
    close()


def image_bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    """Encode a PIL image (any mode) in ``fmt``."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit greyscale PNG of ``width x height`` pixels that compresses to a few tens of KB."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row * 1000) for _ in range(height // 1000)) + packer.compress(row * (height % 1000))
    idat += packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def exif_bytes(orientation: int | None = None, comment_size: int = 0) -> bytes:
    """An EXIF block with an orientation tag and/or a large ImageDescription."""
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if comment_size:
        exif[0x010E] = "x" * comment_size
    return exif.tobytes()


def animated(fmt: str, size=(48, 40), colors=((255, 0, 0), (0, 0, 255))) -> bytes:
    """A two-frame animation (GIF or WebP) whose first frame is ``colors[0]``."""
    frames = [Image.new("RGB", size, c) for c in colors]
    return image_bytes(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0,
                       **({"lossless": True} if fmt == "WEBP" else {}))


def metric(text: str, name: str, **labels) -> float | None:
    """Value of one sample in Prometheus text output whose labels include ``labels`` (None when absent)."""
    import re

    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None
