"""face_parser.detectors: BlazeFace (default) and Haar on a real photo, drawn faces and blank photos."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from face_parser.detectors import (
    EYE_LEFT,
    EYE_RIGHT,
    MOUTH,
    NOSE,
    BlazeFaceDetector,
    Detection,
    HaarFaceDetector,
    as_detection,
    suppress_overlaps,
)
from face_parser.faces import find_faces, landmark_crop
from tests.face_parser.test_faces import FACE_X, face_canvas


@pytest.fixture(scope="module")
def blazeface() -> BlazeFaceDetector:
    return BlazeFaceDetector()


@pytest.fixture(scope="module")
def haar() -> HaarFaceDetector:
    return HaarFaceDetector()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return data.astronaut()  # public domain (NASA), 512x512, one face around x 180-270, y 70-160


def test_blazeface_finds_the_astronaut_with_landmarks_in_place(blazeface, astronaut):
    (face,) = blazeface(astronaut)
    x, y, w, h = face.box
    assert face.score > 0.8 and 150 < x + w / 2 < 260 and 80 < y + h / 2 < 160 and 70 < w < 130
    points = face.landmarks
    assert points.shape == (6, 2)
    eye_l, eye_r, nose, mouth = points[EYE_LEFT], points[EYE_RIGHT], points[NOSE], points[MOUTH]
    assert 190 < eye_l[0] < 220 and 235 < eye_r[0] < 260  # her eyes are about 40 px apart, level
    assert 90 < eye_l[1] < 115 and 90 < eye_r[1] < 115
    assert max(eye_l[1], eye_r[1]) < nose[1] < mouth[1] < y + h  # eyes, then nose, then mouth, inside the box
    assert eye_l[0] < mouth[0] < eye_r[0]


@pytest.mark.parametrize("degrees", [-45, -30, 30, 45])
def test_blazeface_follows_a_turned_photo(blazeface, astronaut, degrees):
    turned = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((256, 256), degrees, 1.0), (512, 512),
                            borderMode=cv2.BORDER_REFLECT)  # OpenCV turns counter-clockwise on screen
    (face,) = blazeface(turned)
    assert math.degrees(landmark_crop(face.landmarks).angle) == pytest.approx(-degrees, abs=8)


def test_blazeface_finds_each_drawn_face_in_a_group_photo(blazeface):
    canvas, _ = face_canvas()
    faces = find_faces(canvas, blazeface)
    assert len(faces) == 3
    for face, x in zip(faces, FACE_X, strict=False):  # left to right, each inside its own 200-px face
        bx, by, bw, bh = face.box
        assert x <= bx and bx + bw <= x + 200 and 60 <= by and by + bh <= 260
        assert face.landmarks is not None


def test_haar_finds_each_drawn_face_in_a_group_photo(haar):
    canvas, _ = face_canvas()
    faces = find_faces(canvas, haar)
    assert len(faces) == 3
    for face, x in zip(faces, FACE_X, strict=False):
        bx, by, bw, bh = face.box
        assert x <= bx and bx + bw <= x + 200 and 60 <= by and by + bh <= 260
        assert face.crop.angle == 0.0 and face.score > 0 and face.landmarks is None


def test_haar_finds_the_face_in_a_real_photo(haar, astronaut):
    (face,) = haar(astronaut)
    x, y, w, h = face.box
    assert 150 < x + w / 2 < 260 and 80 < y + h / 2 < 160 and 70 < w < 130


@pytest.mark.parametrize("shape", [(300, 400, 3), (1, 2000, 3), (2000, 1, 3), (10, 10, 3)])
def test_no_face_in_a_plain_or_degenerate_photo(blazeface, haar, shape):
    photo = np.full(shape, 128, np.uint8)
    assert blazeface(photo) == [] and haar(photo) == []


def test_blazeface_may_run_on_several_threads_at_once(blazeface, astronaut):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(blazeface, [astronaut] * 8))
    assert all(len(a) == 1 and np.allclose(a[0].landmarks, answers[0][0].landmarks) for a in answers)


def test_overlapping_boxes_keep_the_most_confident():
    found = [as_detection(b) for b in [(0, 0, 100, 100, 5.0), (10, 10, 80, 80, 9.0), (300, 0, 50, 50, 1.0)]]
    assert suppress_overlaps(found) == [Detection((10, 10, 80, 80), 9.0), Detection((300, 0, 50, 50), 1.0)]


def test_tiles_find_a_face_a_twentieth_of_the_photo_wide(astronaut):
    """Letterboxed whole to 192 px, a 50-px face in a 1024-px photo is 9 px: too small alone; a tile doubles it."""
    photo = np.full((768, 1024, 3), 120, np.uint8)
    photo[100:350, 600:850] = cv2.resize(astronaut, (250, 250), interpolation=cv2.INTER_AREA)  # her face: ~50 px
    assert BlazeFaceDetector(tiles=0)(photo) == []
    (face,) = BlazeFaceDetector(tiles=2)(photo)
    x, y, w, h = face.box
    assert 40 < w < 65
    assert 600 + 0.3 * 250 < x + w / 2 < 600 + 0.55 * 250 and 100 + 0.15 * 250 < y + h / 2 < 100 + 0.35 * 250


def test_windows_cover_the_photo_with_overlapping_tiles():
    from face_parser.detectors import windows

    whole, *tiles = windows(768, 1024, 2)
    assert whole == (-256, -384, 1536, True) and len(tiles) == 4  # the photo in the middle of a larger square
    side = tiles[0][2]
    assert side == 564 and all(not w[3] and w[2] == side for w in tiles)
    assert {(x, y) for x, y, _, _ in tiles} == {(0, 0), (460, 0), (0, 204), (460, 204)}  # edges meet the photo's
    assert windows(768, 1024, 0) == [whole]
    assert len(windows(300, 340, 2)) == 1  # tiles of 187 px: smaller than the model's input
