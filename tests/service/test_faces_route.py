"""Face finding through the ASGI app: /parse and /recolor with ``faces=auto`` (the default) and ``faces=whole``."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from face_parser.postprocess import label_map_bounded
from face_parser.preprocess import resize_rgb, to_pixel_values
from tests.conftest import png_bytes
from tests.face_parser.test_faces import FACE_X, face_canvas

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools + numpy 2

SKIN, HAIR = 1, 13


@pytest.fixture(scope="module")
def oracle_api(make_module_client, oracle_parser):
    """The parser that knows draw_face's colours, the real (BlazeFace) detector, batches of up to 4."""
    return make_module_client(parser=oracle_parser)


def parse(client, image: np.ndarray, **params):
    return client.post("/parse", params=params, files={"image": ("photo.png", png_bytes(image), "image/png")})


def recolor(client, image: np.ndarray, **form):
    return client.post("/recolor", data=form, files={"image": ("photo.png", png_bytes(image), "image/png")})


def labels_of(r) -> np.ndarray:
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(io.BytesIO(r.content)))


def image_of(r) -> np.ndarray:
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))


def test_a_group_photo_gets_one_parsed_face_per_person_in_place(oracle_api):
    canvas, truth = face_canvas()
    r = parse(oracle_api, canvas, format="rle")
    assert r.status_code == 200 and r.headers["x-faces-found"] == "3"
    body = r.json()
    assert [f["index"] for f in body["faces"]] == [0, 1, 2] and "detail" not in body
    for face, x in zip(body["faces"], FACE_X, strict=True):  # left to right, each box inside its own face
        bx, by, bw, bh = face["box"]
        assert x <= bx and bx + bw <= x + 200 and 60 <= by and by + bh <= 260
        (lx, ly), (rx, ry), _, (_, my), _, _ = face["landmarks"]  # drawn eyes at y ~141, mouth ~171
        assert x + 50 < lx < x + 100 < rx < x + 150 and abs(ly - ry) < 8 and ly < my < by + bh
        assert abs(face["crop"]["angle_deg"]) < 8

    labels = labels_of(parse(oracle_api, canvas))
    assert labels.shape == truth.shape
    for x in FACE_X:
        ys, xs = np.nonzero(labels[:, x:x + 200] == SKIN)
        assert xs.size > 5000 and abs(xs.mean() - 100) < 10 and abs(ys.mean() - 160) < 15  # skin centred in its face
        face_truth = truth[60:260, x:x + 200]
        inner = (slice(70, 230), slice(x + 20, x + 180))  # a training-like crop ends above draw_face's cloth
        assert (labels[inner] == truth[inner]).mean() > 0.8
        assert {SKIN, HAIR} <= set(np.unique(labels[60:260, x:x + 200])) <= set(np.unique(face_truth))
    gaps = np.r_[0:20, 290:300, 560:570, 780:800]  # columns between and beside the faces
    assert (labels[:, gaps] == 0).all() and (labels[:30] == 0).all()


def test_a_photo_with_no_face_answers_all_background_and_says_so(oracle_api):
    photo = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    r = parse(oracle_api, photo, format="rle")
    assert r.status_code == 200 and r.headers["x-faces-found"] == "0"
    body = r.json()
    assert body["faces"] == [] and "no face found" in body["detail"]
    assert [c["id"] for c in body["classes"]] == [0] and body["classes"][0]["area"] == 160 * 120

    png = parse(oracle_api, photo)
    assert png.headers["x-faces-found"] == "0" and (labels_of(png) == 0).all()
    same = recolor(oracle_api, photo, hair_color="#ff0000", lip_color="#00ff00")
    assert same.headers["x-faces-found"] == "0"
    np.testing.assert_array_equal(image_of(same), photo)  # nothing to recolour: the photo, bit for bit


def test_faces_whole_is_the_behaviour_before_face_finding(oracle_api, oracle_parser):
    canvas, _ = face_canvas()
    r = parse(oracle_api, canvas, faces="whole")
    assert "x-faces-found" not in r.headers
    size = oracle_parser.preprocess.size
    scores = oracle_parser.scores(to_pixel_values([resize_rgb(canvas, size)], oracle_parser.preprocess))[0]
    np.testing.assert_array_equal(labels_of(r), label_map_bounded(scores, canvas.shape[:2]).numpy())
    assert "faces" not in parse(oracle_api, canvas, faces="whole", format="rle").json()


@pytest.mark.parametrize("align, passes", [(False, 1), (True, 2)])
def test_the_faces_of_one_photo_share_a_forward_pass(make_client, oracle_parser, align, passes):
    client = make_client(parser=oracle_parser, face_align=align, max_batch_size=4)
    batcher = client.app.state.engine.batcher
    before = batcher.batches_run
    assert parse(client, face_canvas()[0]).headers["x-faces-found"] == "3"
    assert batcher.batches_run - before == passes  # all three crops in each pass's batch


def test_a_stub_detector_decides_where_the_faces_are(make_client, oracle_parser):
    """The detector is injected at the app boundary: crop and paste-back follow its boxes exactly."""
    canvas, _ = face_canvas()
    client = make_client(parser=oracle_parser, detector=lambda image: [(77, 89, 116, 116, 9.0)], face_align=False)
    body = parse(client, canvas, format="rle").json()
    assert [f["box"] for f in body["faces"]] == [[77, 89, 116, 116]]
    labels = labels_of(parse(client, canvas))
    assert (labels[:, 300:] == 0).all() and (labels[60:260, 30:230] == SKIN).sum() > 5000  # the other faces: background


def test_recolor_colours_every_face_or_the_chosen_ones(oracle_api):
    canvas, truth = face_canvas()
    hair = truth == HAIR

    def changed_hair(r) -> list[float]:
        diff = np.abs(image_of(r).astype(int) - canvas.astype(int)).sum(axis=2) > 30
        return [diff[:, x:x + 200][hair[:, x:x + 200]].mean() for x in FACE_X]

    every = recolor(oracle_api, canvas, hair_color="#e03020")
    assert every.headers["x-faces-found"] == "3"
    assert min(changed_hair(every)) > 0.5
    middle = changed_hair(recolor(oracle_api, canvas, hair_color="#e03020", face_indices="1"))
    assert middle[1] > 0.5 and middle[0] == 0 and middle[2] == 0
    outer = changed_hair(recolor(oracle_api, canvas, hair_color="#e03020", face_indices="0, 2"))
    assert outer[0] > 0.5 and outer[2] > 0.5 and outer[1] == 0


@pytest.mark.parametrize("form, message", [
    ({"face_indices": "3"}, "3 faces found"),
    ({"face_indices": "one"}, "comma-separated"),
    ({"face_indices": ","}, "comma-separated"),
    ({"face_indices": "9" * 5000}, "from 0 to 15"),
    ({"face_indices": "0", "faces": "whole"}, "faces=auto"),
    ({"faces": "some"}, "faces"),
])
def test_bad_face_choices_are_422_with_what_is_allowed(oracle_api, form, message):
    r = recolor(oracle_api, face_canvas()[0], hair_color="#e03020", **form)
    assert r.status_code == 422 and message in r.json()["detail"], r.text


def test_faces_parameter_is_validated_on_parse(oracle_api):
    r = parse(oracle_api, face_canvas()[0], faces="all")
    assert r.status_code == 422 and "faces" in r.json()["detail"]


def test_the_haar_detector_remains_a_setting(make_client, oracle_parser):
    client = make_client(parser=oracle_parser, face_detector="haar", face_align=True)
    r = parse(client, face_canvas()[0], format="rle")
    assert r.status_code == 200 and r.headers["x-faces-found"] == "3"
    assert all("landmarks" not in face and face["crop"]["side"] > 100 for face in r.json()["faces"])


def test_with_face_finding_off_whole_photos_parse_and_auto_is_422(make_client, oracle_parser, monkeypatch):
    """FACEPARSE_FACE_DETECTOR=none: the service gets ready with no detector runtime at all (a bare GPU image)."""
    import service.inference as inference

    def unavailable(*args, **kwargs):
        raise RuntimeError("no detector runtime on this machine")

    monkeypatch.setattr(inference, "BlazeFaceDetector", unavailable)  # neither detector may be built
    monkeypatch.setattr(inference, "HaarFaceDetector", unavailable)
    client = make_client(parser=oracle_parser, face_detector="none")
    assert client.get("/readyz").status_code == 200
    image = face_canvas()[0]
    assert parse(client, image, faces="whole").status_code == 200
    r = parse(client, image)  # faces=auto, the default
    assert r.status_code == 422 and "FACEPARSE_FACE_DETECTOR=none" in r.json()["detail"]
    assert recolor(client, image, lip_color="#b0204a").status_code == 422
