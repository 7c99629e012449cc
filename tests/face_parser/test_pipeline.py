"""face_parser.pipeline: find -> crop -> score -> (re-frame -> score) -> paste, with a scoring callable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from face_parser.detectors import BlazeFaceDetector
from face_parser.labels import CELEBAMASK_HQ_SCHEME as LABELS
from face_parser.pipeline import FacePipeline, advance
from tests.face_parser.test_faces import FACE_X, face_canvas


class CountingScorer:
    """Scores every crop as skin where it is bright, background elsewhere; records the crops it got."""

    def __init__(self):
        self.calls: list[list[np.ndarray]] = []

    def __call__(self, images_hwc: list[np.ndarray]) -> list[torch.Tensor]:
        self.calls.append(images_hwc)
        out = []
        for image in images_hwc:
            skin = torch.from_numpy(image[::4, ::4].mean(axis=-1) > 150).float()
            scores = torch.full((len(LABELS), *skin.shape), 0.01)
            scores[0], scores[1] = 1 - skin + 0.01, skin * 0.98 + 0.01  # never exactly 0, as a model's are not
            out.append(scores)
        return out


@pytest.fixture(scope="module")
def detector() -> BlazeFaceDetector:
    return BlazeFaceDetector()


@pytest.mark.parametrize("second_pass, calls", [(False, 1), (True, 2)])
def test_a_group_photo_is_one_scoring_call_per_pass(detector, second_pass, calls):
    canvas, truth = face_canvas()
    scorer = CountingScorer()
    parsing = FacePipeline(detector, 96, LABELS, second_pass=second_pass).run(canvas, scorer)
    assert len(scorer.calls) == calls and all(len(c) == 3 for c in scorer.calls)
    assert all(crop.shape == (96, 96, 3) for c in scorer.calls for crop in c)  # the model's input size, any size
    labels = parsing.label_map(canvas.shape[:2])
    for x in FACE_X:  # each face's skin comes back in place
        skin = truth[:, x:x + 200] == 1
        assert (labels[:, x:x + 200][skin] == 1).mean() > 0.8  # the crop frames the face, not all the skin
    assert (labels[:, :20] == 0).all()


def test_no_face_means_no_scoring_and_all_background(detector):
    scorer = CountingScorer()
    parsing = FacePipeline(detector, 96, LABELS).run(np.full((200, 300, 3), 128, np.uint8), scorer)
    assert scorer.calls == [] and parsing.faces == [] and (parsing.label_map((200, 300)) == 0).all()


def test_max_faces_keeps_the_most_confident(detector):
    canvas, _ = face_canvas()
    parsing = FacePipeline(detector, 64, LABELS, max_faces=2).run(canvas, CountingScorer())
    assert len(parsing.faces) == 2 and parsing.faces[0].box[0] < parsing.faces[1].box[0]


def test_steps_can_be_driven_by_hand(detector):
    """What the service does with ``await``: ask, score elsewhere, hand the scores back."""
    canvas, _ = face_canvas()
    steps = FacePipeline(detector, 64, LABELS).steps(canvas)
    crops = advance(steps, None)
    assert isinstance(crops, list) and len(crops) == 3
    parsing = advance(steps, CountingScorer()(crops))
    assert len(parsing.faces) == 3 and len(parsing.scores) == 3
