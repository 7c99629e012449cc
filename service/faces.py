"""From a decoded photo to the model's parsing of it: whole (``faces=whole``) or face by face (``faces=auto``).

``whole`` sends the photo, resized to the model's input, through the batcher as
one item (the behaviour before face finding). ``auto`` finds the faces in a
worker thread, queues the crops of all of them together, so that a group photo's
faces share a forward pass, then (``FACEPARSE_FACE_ALIGN``) queues them again
framed by their parsed eyes and mouth. :class:`Parsing` turns either answer into
a label map or class probabilities at the photo's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from fastapi import Request

from face_parser.faces import Face, align_faces, crop_face, face_label_map, find_faces, paste_probabilities
from face_parser.labels import LabelScheme
from face_parser.postprocess import class_probabilities, label_map_bounded
from service.deps import run_model
from service.inference import InferenceEngine
from service.settings import Settings
from service.threads import run_in_worker

FacesMode = Literal["auto", "whole"]
FACES_DESCRIPTION = ("auto: find the faces, parse each at full detail, paste back (pixels outside every face are "
                     "background); whole: parse the photo as one aligned face")
NO_FACE = "no face found: every pixel is background; send faces=whole to parse the photo as one face"


@dataclass
class Parsing:
    """The model's answer for one photo: one ``(K, h, w)`` score map (``faces`` None: parsed whole) or one per face."""

    scores: list[torch.Tensor]
    faces: list[Face] | None

    def label_map(self, size: tuple[int, int], max_side: int) -> np.ndarray:
        """``(H, W)`` uint8 class ids at the photo's ``size``."""
        if self.faces is None:
            return label_map_bounded(self.scores[0], size, max_side).numpy()
        return face_label_map(self.scores, [f.crop for f in self.faces], size, max_side).numpy()

    def probabilities(self, size: tuple[int, int], class_ids: Sequence[int],
                      face_indices: Sequence[int] | None = None) -> torch.Tensor:
        """``(len(class_ids), H, W)`` float32 probabilities at ``size``.

        With ``face_indices``, pixels owned by the other faces are 0.
        """
        if self.faces is None:
            chosen = class_probabilities(self.scores[0][None])[0][list(class_ids)][None]
            return F.interpolate(chosen, size=size, mode="bilinear", align_corners=False)[0]
        if not self.faces:
            return torch.zeros(len(class_ids), *size)
        probs_chw, owner_hw = paste_probabilities(self.scores, [f.crop for f in self.faces], size, class_ids=class_ids)
        if face_indices is not None:
            probs_chw *= torch.isin(owner_hw, torch.tensor(list(face_indices), dtype=owner_hw.dtype))
        return probs_chw

    def summary(self) -> dict:
        """The faces part of a JSON answer (nothing when parsed whole)."""
        if self.faces is None:
            return {}
        body: dict = {"faces": [face_json(i, f) for i, f in enumerate(self.faces)]}
        if not self.faces:
            body["detail"] = NO_FACE
        return body

    def headers(self) -> dict[str, str]:
        return {} if self.faces is None else {"X-Faces-Found": str(len(self.faces))}


def part_probabilities(parsing: Parsing, labels: LabelScheme, size: tuple[int, int], parts,
                       face_indices: list[int] | None) -> dict:
    """Full-size probabilities of just the parts the recolouring needs (of the chosen faces)."""
    ids = {name: labels.id_of(name) for name in parts if name in labels.names}
    if not ids:
        return {}
    full = parsing.probabilities(size, list(ids.values()), face_indices)
    return {name: full[i].numpy() for i, name in enumerate(ids)}


def face_json(index: int, face: Face) -> dict:
    """One face as listed in answers: the detector's box ``[x, y, width, height]`` and the crop that was parsed."""
    crop = face.crop
    return {
        "index": index, "box": list(face.box), "score": round(face.score, 2),
        "crop": {"center": [round(crop.cx, 1), round(crop.cy, 1)], "side": round(crop.side, 1),
                 "angle_deg": round(float(np.degrees(crop.angle)), 1)},
    }


async def parse_photo(request: Request, engine: InferenceEngine, photo_hwc: np.ndarray, mode: FacesMode,
                      settings: Settings) -> Parsing:
    """Run the model on the photo (``whole``) or on each face found in it (``auto``)."""
    if mode == "whole":
        return Parsing(await run_model(request, engine, [photo_hwc]), None)
    faces = await run_in_worker(find_faces, photo_hwc, engine.detector, settings.max_faces)
    if not faces:
        return Parsing([], [])
    scores = await _parse_crops(request, engine, photo_hwc, faces)
    if settings.face_align:
        faces = align_faces(faces, scores, engine.parser.labels)
        scores = await _parse_crops(request, engine, photo_hwc, faces)
    return Parsing(scores, faces)


async def _parse_crops(request: Request, engine: InferenceEngine, photo_hwc: np.ndarray, faces: list[Face]):
    size = engine.parser.preprocess.size
    crops = await run_in_worker(lambda: [crop_face(photo_hwc, f.crop, size) for f in faces])
    return await run_model(request, engine, crops)
