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
    search_shrink,
    suppress_overlaps,
)
from face_parser.faces import celeba_crop, find_faces, landmark_crop, second_look, settled
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


@pytest.mark.parametrize("degrees, scale", [(30, 0.5), (30, 0.4), (0, 0.25)])
def test_a_second_look_frames_a_small_turned_face_as_in_the_photo_itself(blazeface, astronaut, degrees, scale):
    """The astronaut shrunk and turned on a larger canvas: a face of 20-50 px that the search sees at a few model
    pixels. The crop her second-look points frame lands where the same crop of the photo itself goes under the
    (known) warp, within 2% of its side, 5 degrees and 8% in size; the first look's points miss by far more."""
    (found,) = blazeface(astronaut)
    reference = landmark_crop(second_look(astronaut, found, blazeface)[0].landmarks, None)
    canvas, warp = warped_astronaut(astronaut, degrees, scale)
    cx, cy = warp @ [reference.cx, reference.cy, 1]
    face = min(blazeface(canvas), key=lambda d: math.hypot(d.box[0] + d.box[2] / 2 - cx, d.box[1] + d.box[3] / 2 - cy))

    def miss(landmarks: np.ndarray) -> tuple[float, float, float]:
        crop = landmark_crop(landmarks, None)
        turn = math.degrees(math.remainder(crop.angle - reference.angle + math.radians(degrees), 2 * math.pi))
        return math.hypot(crop.cx - cx, crop.cy - cy) / crop.side, abs(turn), abs(math.log(crop.side / reference.side
                                                                                                / scale))

    first, second = miss(face.landmarks), miss(second_look(canvas, face, blazeface)[0].landmarks)
    assert all(m < bound for m, bound in zip(second, (0.02, 5.0, 0.08), strict=True)), second
    assert max(a / b for a, b in zip(first, second, strict=True)) > 5, (first, second)


def warped_astronaut(astronaut, degrees: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut turned and shrunk onto a 1280 x 960 canvas; the canvas and the warp (2 x 3)."""
    warp = cv2.getRotationMatrix2D((256, 256), degrees, scale) + [[0, 0, 344], [0, 0, 144]]
    return cv2.warpAffine(astronaut, warp, (1280, 960), borderValue=(90, 110, 130)), warp


@pytest.mark.parametrize("degrees, scale", [(30, 0.2), (75, 0.2), (90, 0.3)])
def test_a_face_only_its_second_look_is_sure_of_is_found(blazeface, astronaut, degrees, scale):
    """Small and turned, she scores under ``min_score`` in the photo's search; seen alone she scores above."""
    (face,) = find_faces(astronaut, blazeface)
    canvas, warp = warped_astronaut(astronaut, degrees, scale)
    assert blazeface(canvas) == []
    (found,) = find_faces(canvas, blazeface)
    cx, cy = warp @ [face.crop.cx, face.crop.cy, 1]
    assert found.score >= blazeface.min_score
    assert math.hypot(found.crop.cx - cx, found.crop.cy - cy) < 0.1 * found.crop.side
    assert found.crop.side / (face.crop.side * scale) == pytest.approx(1, abs=0.1)


def test_candidates_a_second_look_moves_onto_one_face_give_one_face(blazeface, astronaut):
    canvas, _ = warped_astronaut(astronaut, 75, 0.3)
    assert len(blazeface(canvas)) == 3
    assert len(find_faces(canvas, blazeface)) == 1


@pytest.mark.parametrize("shape, shrink", [((512, 512), 1), ((768, 1024), 2), ((3000, 4000), 8), ((1, 2000), 1),
                                           ((300, 400), 1)])
def test_a_photo_is_shrunk_by_a_power_of_two_that_keeps_every_window_at_least_the_model_input(shape, shrink):
    assert search_shrink(*shape, tiles=2) == shrink
    finest = max(shape) * 1.1 / 2 / shrink  # a tile's side in the shrunk photo
    assert finest >= BlazeFaceDetector.SIZE or shrink == 1


def test_a_large_photo_shrunk_once_finds_the_face_where_the_photo_has_it(blazeface, astronaut):
    """The astronaut on a 2048 x 1536 canvas, searched on a copy 4x smaller: her box and points come back in
    the photo's own pixels, where the same face on a 512-px-scale copy of the canvas puts them (x4)."""
    canvas = np.full((1536, 2048, 3), 120, np.uint8)
    canvas[512:1024, 768:1280] = astronaut
    assert search_shrink(1536, 2048, blazeface.tiles) == 4
    (face,) = blazeface(canvas)
    (reference,) = blazeface(cv2.resize(canvas, (512, 384), interpolation=cv2.INTER_AREA))
    assert np.abs(face.landmarks - reference.landmarks * 4).max() < 4
    assert face.box == pytest.approx(tuple(4 * v for v in reference.box), abs=4)


def test_a_look_is_settled_when_its_points_frame_the_crop_it_was_framed_on():
    eyes_mouth = np.array([[40.0, 50.0], [60.0, 50.0], [50.0, 60.0], [50.0, 72.0], [30.0, 55.0], [70.0, 55.0]])
    def frame(points):
        return celeba_crop(points[EYE_LEFT], points[EYE_RIGHT], points[MOUTH])

    crop = frame(eyes_mouth)
    assert settled(crop, frame(eyes_mouth))
    assert settled(crop, frame(eyes_mouth + 1.0))  # 1 px of 80: the same frame
    assert not settled(crop, frame((eyes_mouth - 50) * 1.5 + 50))  # the face half as large again
    turned = cv2.transform(eyes_mouth[None], cv2.getRotationMatrix2D((50, 60), 20, 1.0))[0]
    assert not settled(crop, frame(turned))


def test_a_face_is_kept_only_when_its_second_look_sees_a_face_there(astronaut):
    """However sure the photo's search is (the astronaut: 0.9), a face that the second look, seeing it alone,
    does not see at all is not kept."""
    blind = BlazeFaceDetector()
    blind.landmarks_in_view = lambda view: None  # type: ignore[method-assign]
    assert blind(astronaut)[0].score > 0.8
    assert find_faces(astronaut, blind) == []
    assert len(find_faces(astronaut, BlazeFaceDetector())) == 1


def test_a_second_look_keeps_the_first_when_it_sees_no_face(blazeface):
    found = Detection((10, 10, 40, 40), 0.9, np.array([[20, 25], [40, 25], [30, 35], [30, 42], [12, 30], [48, 30]],
                                                       np.float64))
    assert second_look(np.full((300, 300, 3), 128, np.uint8), found, blazeface) == (found, 0.0)
    assert blazeface.landmarks_in_view(np.full((192, 192, 3), 128, np.uint8)) is None


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
