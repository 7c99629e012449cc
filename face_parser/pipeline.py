"""The one face pipeline: find the faces, crop each, score the crops, (optionally) re-frame and score again.

Serving, evaluation and the benchmarks all run it, so a measured figure comes
from the code that answers requests. The model is not called here: the caller
passes a scoring callable (RGB images -> ``(K, h, w)`` scores each). Evaluation
passes :meth:`FaceParser.score_images`; the service passes its batcher, which is
asynchronous, so the pipeline is written as steps (a generator that yields the
crops it wants scored and receives their scores): :meth:`FacePipeline.run`
drives it with a plain function, the service drives it with ``await``, and the
CPU work between two scorings runs wherever the driver puts it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from face_parser.detectors import FaceDetector
from face_parser.faces import Face, align_faces, crop_face, find_faces
from face_parser.labels import LabelScheme
from face_parser.paste import face_label_map, paste_probabilities
from face_parser.postprocess import chosen_probabilities, label_map_bounded

ScoreFn = Callable[[list[np.ndarray]], list[torch.Tensor]]  # (H, W, 3) uint8 RGB each -> (K, h, w) float each


@dataclass
class FaceParsing:
    """The model's answer for one photo: one ``(K, h, w)`` score map (``faces`` None: parsed whole) or one per face."""

    scores: list[torch.Tensor]
    faces: list[Face] | None

    def label_map(self, size: tuple[int, int], max_side: int = 2048) -> np.ndarray:
        """``(H, W)`` uint8 class ids at the photo's ``size`` (computed at most at ``max_side``, then enlarged)."""
        if self.faces is None:
            return label_map_bounded(self.scores[0], size, max_side).numpy()
        return face_label_map(self.scores, [f.crop for f in self.faces], size, max_side).numpy()

    def probabilities(self, size: tuple[int, int], class_ids: Sequence[int],
                      face_indices: Sequence[int] | None = None) -> torch.Tensor:
        """``(len(class_ids), H, W)`` float32 probabilities at ``size``.

        With ``face_indices``, pixels owned by the other faces are 0.
        """
        if self.faces is None:
            return chosen_probabilities(self.scores[0][None], list(class_ids), size)[0]
        if not self.faces:
            return torch.zeros(len(class_ids), *size)
        probs_chw, owner_hw = paste_probabilities(self.scores, [f.crop for f in self.faces], size, class_ids=class_ids)
        if face_indices is not None:
            probs_chw *= torch.isin(owner_hw, torch.tensor(list(face_indices), dtype=owner_hw.dtype))
        return probs_chw


Steps = Generator[list[np.ndarray], list[torch.Tensor], FaceParsing]


@dataclass(frozen=True)
class FacePipeline:
    """``faces=auto``: ``detector`` finds up to ``max_faces`` faces; each is cut at the model's ``input_size``
    as its landmarks frame it; ``second_pass`` parses each again, framed by its parsed eyes and mouth."""

    detector: FaceDetector
    input_size: int
    labels: LabelScheme
    max_faces: int = 16
    second_pass: bool = False

    def steps(self, image_hwc: np.ndarray) -> Steps:
        """Yields each list of crops to score, receives their scores, returns the :class:`FaceParsing`."""
        faces = find_faces(image_hwc, self.detector, self.max_faces)
        if not faces:
            return FaceParsing([], [])
        scores = yield self.crops(image_hwc, faces)
        if self.second_pass:
            faces = align_faces(faces, scores, self.labels)
            scores = yield self.crops(image_hwc, faces)
        return FaceParsing(list(scores), faces)

    def crops(self, image_hwc: np.ndarray, faces: Sequence[Face]) -> list[np.ndarray]:
        return [crop_face(image_hwc, f.crop, self.input_size) for f in faces]

    def run(self, image_hwc: np.ndarray, score: ScoreFn) -> FaceParsing:
        """The whole pipeline with a synchronous ``score`` (evaluation, benchmarks)."""
        steps = self.steps(image_hwc)
        wanted = advance(steps, None)
        while not isinstance(wanted, FaceParsing):
            wanted = advance(steps, score(wanted))
        return wanted


def advance(steps: Steps, scores: list[torch.Tensor] | None) -> list[np.ndarray] | FaceParsing:
    """One step: hand ``steps`` the scores it asked for (None to start); the next crops to score, or the answer.

    Returns the answer instead of raising ``StopIteration``, which cannot cross
    a thread pool's future.
    """
    try:
        return next(steps) if scores is None else steps.send(scores)
    except StopIteration as done:
        return done.value

