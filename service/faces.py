"""From a decoded photo to the model's parsing of it: whole (``faces=whole``) or face by face (``faces=auto``).

``whole`` sends the photo, resized to the model's input, through the batcher as
one item (the behaviour before face finding). ``auto`` drives the shared
:class:`~face_parser.pipeline.FacePipeline`: its CPU steps (face finding,
cropping, re-framing) run in a worker thread, and each list of crops it asks to
score is queued through the batcher together, so a group photo's faces share a
forward pass. This module adds only what an HTTP answer needs: the batcher with
its error mapping and disconnect handling (:func:`service.deps.run_model`), and
the faces listed in the answer.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from fastapi import Request

from face_parser.faces import Face
from face_parser.labels import LabelScheme
from face_parser.pipeline import FaceParsing, advance
from service.deps import run_model
from service.inference import InferenceEngine
from service.threads import run_in_worker

FacesMode = Literal["auto", "whole"]
FACES_DESCRIPTION = ("auto: find the faces, parse each at full detail, paste back (pixels outside every face are "
                     "background); whole: parse the photo as one aligned face")
NO_FACE = "no face found: every pixel is background; send faces=whole to parse the photo as one face"


async def parse_photo(request: Request, engine: InferenceEngine, photo_hwc: np.ndarray, mode: FacesMode) -> FaceParsing:
    """Run the model on the photo (``whole``) or on each face found in it (``auto``)."""
    if mode == "whole":
        return FaceParsing(await run_model(request, engine, [photo_hwc]), None)
    steps = engine.pipeline.steps(photo_hwc)
    wanted = await run_in_worker(advance, steps, None)
    while not isinstance(wanted, FaceParsing):
        wanted = await run_in_worker(advance, steps, await run_model(request, engine, wanted))
    return wanted


def faces_summary(parsing: FaceParsing) -> dict:
    """The faces part of a JSON answer (nothing when parsed whole)."""
    if parsing.faces is None:
        return {}
    body: dict = {"faces": [face_json(i, f) for i, f in enumerate(parsing.faces)]}
    if not parsing.faces:
        body["detail"] = NO_FACE
    return body


def faces_headers(parsing: FaceParsing) -> dict[str, str]:
    return {} if parsing.faces is None else {"X-Faces-Found": str(len(parsing.faces))}


def part_probabilities(parsing: FaceParsing, labels: LabelScheme, size: tuple[int, int], parts,
                       face_indices: list[int] | None) -> dict:
    """Full-size probabilities of just the parts the recolouring needs (of the chosen faces)."""
    ids = {name: labels.id_of(name) for name in parts if name in labels.names}
    if not ids:
        return {}
    full = parsing.probabilities(size, list(ids.values()), face_indices)
    return {name: full[i].numpy() for i, name in enumerate(ids)}


def face_json(index: int, face: Face) -> dict:
    """One face as listed in answers: the detector's box ``[x, y, width, height]``, the crop that was parsed
    and, from a landmark detector, ``landmarks`` (eye on the photo's left, other eye, nose, mouth, ears)."""
    crop = face.crop
    body = {
        "index": index, "box": list(face.box), "score": round(face.score, 2),
        "crop": {"center": [round(crop.cx, 1), round(crop.cy, 1)], "side": round(crop.side, 1),
                 "angle_deg": round(float(np.degrees(crop.angle)), 1)},
    }
    if face.landmarks is not None:
        body["landmarks"] = [[round(x, 1), round(y, 1)] for x, y in face.landmarks]
    return body
