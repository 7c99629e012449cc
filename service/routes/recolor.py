"""POST /recolor: lips and/or hair recoloured, blended with the model's soft probabilities."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from face_parser.labels import LabelScheme
from face_parser.pipeline import FaceParsing
from service.deps import EngineDep, PhotoDep, SettingsDep, decimal_below, require_api_key
from service.errors import InvalidParameter
from service.faces import FACES_DESCRIPTION, FacesMode, faces_headers, parse_photo, part_probabilities
from service.imaging import OUTPUT_FORMATS, OUTPUT_MAX_SIDE, encode_image
from service.recolor import ColorRequest, LipFinish, needed_parts, parse_hex_color, recolor
from service.threads import run_in_worker

router = APIRouter(tags=["recolor"], dependencies=[Depends(require_api_key)])


LIP_FINISH_DESCRIPTION = ("natural: the photo's own sheen; matte: highlights flattened; satin: a soft sheen; "
                          "gloss: highlights strengthened")


def color_request(field: str, value: str | None, intensity: float,
                  finish: LipFinish = "natural") -> ColorRequest | None:
    if value is None or value == "":
        return None
    try:
        return ColorRequest(parse_hex_color(value), intensity, finish)
    except ValueError as exc:
        raise InvalidParameter(f"{field}: {exc}") from None


def parse_face_indices(value: str | None, faces: FacesMode, max_faces: int) -> list[int] | None:
    """``"0,2"`` -> [0, 2]: the faces to recolour (all when empty); no photo has a face past ``max_faces - 1``."""
    if value is None or not value.strip():
        return None
    if faces == "whole":
        raise InvalidParameter("face_indices: choosing faces needs faces=auto")
    indices = {decimal_below(t.strip(), max_faces) for t in value.split(",") if t.strip()}
    if not indices or None in indices:
        raise InvalidParameter(f"face_indices: {value!r} must be comma-separated face numbers from 0 to "
                               f"{max_faces - 1} (at most {max_faces} faces are parsed), such as 0,2")
    return sorted(i for i in indices if i is not None)


def check_output_size(photo_hwc: np.ndarray, fmt: str) -> None:
    """The answer has the photo's size: refuse, before any inference, a photo that ``fmt`` cannot hold."""
    height, width = photo_hwc.shape[:2]
    if max(height, width) > OUTPUT_MAX_SIDE[fmt]:
        fitting = " or ".join(f for f, side in OUTPUT_MAX_SIDE.items() if max(height, width) <= side)
        raise InvalidParameter(f"format={fmt}: the photo is {width}x{height} and {fmt} holds at most "
                               f"{OUTPUT_MAX_SIDE[fmt]} px a side; format={fitting} would take it")


def check_face_indices(indices: list[int] | None, parsing: FaceParsing) -> None:
    if indices is None or parsing.faces is None:
        return
    found = len(parsing.faces)
    if indices[-1] >= found:
        allowed = f"0..{found - 1}" if found else "none"
        raise InvalidParameter(f"face_indices: face {indices[-1]} does not exist; {found} faces found ({allowed})")


def render(parsing: FaceParsing, photo_hwc: np.ndarray, labels: LabelScheme, lips, hair, fmt: str,
           face_indices: list[int] | None) -> bytes:
    probs = part_probabilities(parsing, labels, photo_hwc.shape[:2], needed_parts(lips, hair), face_indices)
    return encode_image(recolor(photo_hwc, probs, lips, hair), fmt)


@router.post("/recolor", summary="Recolour lips and/or hair; returns the photo at its original size")
async def recolor_photo(
    request: Request, photo: PhotoDep, engine: EngineDep, settings: SettingsDep,
    lip_color: Annotated[str | None, Form(description="#RRGGBB")] = None,
    hair_color: Annotated[str | None, Form(description="#RRGGBB")] = None,
    lip_intensity: Annotated[float, Form(ge=0.0, le=1.0)] = 0.7,
    hair_intensity: Annotated[float, Form(ge=0.0, le=1.0)] = 0.8,
    lip_finish: Annotated[LipFinish, Form(description=LIP_FINISH_DESCRIPTION)] = "natural",
    format: Annotated[Literal["png", "jpeg", "webp"], Form()] = "png",
    faces: Annotated[FacesMode, Form(description=FACES_DESCRIPTION)] = "auto",
    face_indices: Annotated[str | None, Form(description="faces=auto: comma-separated face numbers to recolour "
                                             "(as listed by /parse?format=rle, left to right); default all")] = None,
) -> Response:
    lips = color_request("lip_color", lip_color, lip_intensity, lip_finish)
    hair = color_request("hair_color", hair_color, hair_intensity)
    if lips is None and hair is None:
        raise InvalidParameter("give lip_color and/or hair_color as #RRGGBB")
    indices = parse_face_indices(face_indices, faces, settings.max_faces)
    check_output_size(photo, format)
    parsing = await parse_photo(request, engine, photo, faces)
    check_face_indices(indices, parsing)
    body = await run_in_worker(render, parsing, photo, engine.parser.labels, lips, hair, format, indices)
    return Response(body, media_type=OUTPUT_FORMATS[format][1],
                    headers={"X-Model-Version": engine.parser.version, **faces_headers(parsing)})
