"""POST /parse through the ASGI app: the three answer formats, the class filter, parameters, batching."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask

from tests.conftest import client_factory, draw_face, parser_like, png_bytes
from tests.face_parser.test_faces import face_canvas

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools + numpy 2

N_CLASSES = 19


@pytest.fixture(scope="module")
def api(make_module_client):
    """The tiny random model."""
    return make_module_client()


@pytest.fixture(scope="module")
def oracle_api(make_module_client, oracle_parser):
    """A parser that recognises draw_face's colours: many classes per answer."""
    return make_module_client(parser=oracle_parser)


def post_parse(client, image_bytes: bytes, **params):
    """POST /parse of the whole photo (``faces=whole``; face finding has its own tests in test_faces_route.py)."""
    params = {"faces": "whole", **params}
    return client.post("/parse", params=params, files={"image": ("photo.png", image_bytes, "image/png")})


def open_png(body: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(body))
    im.load()
    return im


def decode_rle(cls: dict) -> np.ndarray:
    return coco_mask.decode({"size": cls["rle"]["size"], "counts": cls["rle"]["counts"].encode("ascii")})


def photo(width=120, height=90, seed=1) -> np.ndarray:
    img = draw_face(max(width, height), seed)[0]
    return np.ascontiguousarray(img[:height, :width])


@pytest.mark.parametrize("client_name", ["api", "oracle_api"])
def test_png_is_a_palette_png_of_class_ids_at_input_size(client_name, request):
    client = request.getfixturevalue(client_name)
    r = post_parse(client, png_bytes(photo(120, 90)))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-model-version"] == "tiny-test"
    im = open_png(r.content)
    assert im.mode == "P" and im.size == (120, 90)
    assert np.asarray(im).max() < N_CLASSES


def test_png_answer_is_the_parsing(oracle_api):
    img, truth = draw_face(160, seed=2)
    r = post_parse(oracle_api, png_bytes(img))
    labels = np.asarray(open_png(r.content))
    assert (labels == truth).mean() > 0.85  # the oracle parser is good at cartoon faces at 1/4 resolution
    assert {1, 13, 18}.issubset(set(np.unique(labels).tolist()))


def test_color_answer_is_rgb_and_overlay_blends_the_photo(oracle_api):
    img = photo(100, 80, seed=3)
    labels = np.asarray(open_png(post_parse(oracle_api, png_bytes(img)).content))
    palette = oracle_api.get("/v1/model").json()["labels"]
    colors = np.array([label["color"] for label in palette], np.uint8)

    plain = open_png(post_parse(oracle_api, png_bytes(img), format="color").content)
    assert plain.mode == "RGB" and plain.size == (100, 80)
    np.testing.assert_array_equal(np.asarray(plain), colors[labels])

    photo_only = open_png(post_parse(oracle_api, png_bytes(img), format="color", overlay="true", opacity=0).content)
    np.testing.assert_array_equal(np.asarray(photo_only), img)
    half = np.asarray(open_png(post_parse(oracle_api, png_bytes(img), format="color", overlay="true",
                                          opacity=0.5).content)).astype(np.float32)
    assert np.abs(half - (img.astype(np.float32) + colors[labels]) / 2).max() <= 1


@pytest.mark.parametrize("client_name", ["api", "oracle_api"])
def test_rle_decodes_to_the_png_answer_exactly(client_name, request):
    client = request.getfixturevalue(client_name)
    data = png_bytes(photo(130, 110, seed=4))
    labels = np.asarray(open_png(post_parse(client, data).content))
    r = post_parse(client, data, format="rle")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert (body["width"], body["height"], body["model_version"]) == (130, 110, "tiny-test")
    assert [c["id"] for c in body["classes"]] == sorted(np.unique(labels).tolist())
    for cls in body["classes"]:
        mask = decode_rle(cls)
        np.testing.assert_array_equal(mask, labels == cls["id"])
        assert cls["area"] == int(mask.sum())
    if client_name == "oracle_api":
        assert len(body["classes"]) >= 5


def test_rle_class_filter_by_name_and_id(oracle_api):
    data = png_bytes(photo(120, 120, seed=5))
    full = {c["id"]: c for c in post_parse(oracle_api, data, format="rle").json()["classes"]}
    assert {1, 13}.issubset(full)
    body = post_parse(oracle_api, data, format="rle", classes="hair,skin").json()
    assert sorted(c["id"] for c in body["classes"]) == [1, 13]
    assert all(c == full[c["id"]] for c in body["classes"])
    by_id = post_parse(oracle_api, data, format="rle", classes=" 13 , hat").json()
    assert [c["name"] for c in by_id["classes"]] == ["hair"]  # hat is not in the photo


@pytest.mark.parametrize("classes", ["hair,wings", "99", "-1", "HAIR"])
def test_unknown_class_is_422(api, classes):
    r = post_parse(api, png_bytes(photo()), format="rle", classes=classes)
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "invalid_parameter" and "unknown class" in body["detail"]


@pytest.mark.parametrize("classes, message", [("9" * 5000, "unknown class"), (",,", "no class"), (" , ", "no class")],
                         ids=["5000-digits", "commas", "blank"])
def test_a_class_filter_that_names_no_class_is_422(api, classes, message):
    r = post_parse(api, png_bytes(photo()), format="rle", classes=classes)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_parameter" and message in r.json()["detail"]


@pytest.mark.parametrize("params", [{"format": "gif"}, {"opacity": "1.5"}, {"opacity": "-0.1"},
                                    {"opacity": "half"}, {"overlay": "maybe"}])
def test_out_of_range_parameters_are_422(api, params):
    r = post_parse(api, png_bytes(photo()), **params)
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_parameter"
    assert next(iter(params)) in r.json()["detail"]


def _concurrent_parse(client, images: list[bytes]) -> list:
    with ThreadPoolExecutor(len(images)) as pool:
        return list(pool.map(lambda data: post_parse(client, data), images))


@pytest.mark.parametrize("use_oracle", [False, True], ids=["tiny-model", "oracle"])
def test_concurrent_requests_are_batched_and_answers_map_back(make_client, oracle_parser, use_oracle):
    """Eight different photos at once: fewer forward passes than requests, each caller its own answer."""
    client = make_client(parser=oracle_parser if use_oracle else None, max_batch_size=8, max_batch_delay_ms=300)
    sizes = [(72 + 9 * i, 64 + 5 * i) for i in range(8)]  # every answer has its own size, too
    images = [png_bytes(photo(w, h, seed=10 + i)) for i, (w, h) in enumerate(sizes)]
    batcher = client.app.state.engine.batcher
    assert batcher.batches_run == 0

    answers = _concurrent_parse(client, images)
    batches = batcher.batches_run
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    assert batches < len(images)

    batcher.max_delay_s = 0.0  # lone requests from here on: no need to wait for companions
    for (w, h), data, answer in zip(sizes, images, answers, strict=True):
        alone = post_parse(client, data)
        assert open_png(answer.content).size == (w, h)
        np.testing.assert_array_equal(np.asarray(open_png(answer.content)), np.asarray(open_png(alone.content)))
    assert batcher.batches_run == batches + len(images)  # one forward pass per lone request


@pytest.mark.parametrize(("flip", "tta_sizes", "queued_size"), [(False, [], 64), (True, [], 64), (True, [32, 96], 96)])
@pytest.mark.parametrize("faces", ["whole", "auto"])
def test_the_test_time_augmentation_settings_reach_every_forward_pass(make_client, tiny_parser, flip, tta_sizes,
                                                                      queued_size, faces):
    """Photos and face crops are queued at the largest input size a pass reads (the tiny model's is 64)."""
    seen: list[tuple[bool, tuple[int, ...], tuple[int, ...]]] = []

    class Spy(type(tiny_parser)):  # type: ignore[misc]
        def score_images(self, images_hwc, flip=False, extra_sizes=()):
            seen.extend((flip, tuple(extra_sizes), im.shape) for im in images_hwc)
            return super().score_images(images_hwc, flip, extra_sizes)

    client = make_client(parser=parser_like(tiny_parser, Spy), flip=flip, tta_sizes=tta_sizes)
    warm_up = len(seen)
    photo = face_canvas()[0] if faces == "auto" else draw_face(160)[0]  # three faces BlazeFace finds / a cartoon
    response = post_parse(client, png_bytes(photo), format="png", faces=faces)
    assert response.status_code == 200 and open_png(response.content).size == photo.shape[1::-1]
    assert faces == "whole" or response.headers["x-faces-found"] == "3"
    assert len(seen) == warm_up + (3 if faces == "auto" else 1)  # each face crop, or the whole photo
    assert set(seen) == {(flip, tuple(tta_sizes), (queued_size, queued_size, 3))}  # warm-up and the request alike
    assert client.get("/v1/model").json()["test_time_augmentation"] == {"flip": flip, "extra_sizes": tta_sizes}


def test_the_model_folders_class_calibration_decides_the_served_labels(make_client, tiny_parser):
    """A class log-bias (model_training.calibrate) reaches /parse: one far above every score's spread takes
    every pixel; /v1/model lists it."""
    bias = torch.zeros(N_CLASSES)
    bias[tiny_parser.labels.id_of("hat")] = 60.0
    client = make_client(parser=parser_like(tiny_parser, type(tiny_parser), class_log_bias=bias))
    response = post_parse(client, png_bytes(photo()), format="png")
    assert response.status_code == 200
    assert set(np.unique(np.asarray(open_png(response.content)))) == {tiny_parser.labels.id_of("hat")}
    assert client.get("/v1/model").json()["class_log_bias"] == {"hat": 60.0}


def test_a_mask2former_folder_is_served_like_a_maskformer_one(tiny_m2f_dir):
    factory, close = client_factory(tiny_m2f_dir)
    try:
        r = post_parse(factory(), png_bytes(photo()), format="png")
    finally:
        close()
    assert r.status_code == 200, r.text
    labels = np.asarray(open_png(r.content))
    assert labels.shape == (90, 120) and labels.max() < N_CLASSES
