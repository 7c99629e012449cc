"""POST /recolor: lips and/or hair recoloured, blended with the model's soft probabilities."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import torch
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from face_parser.labels import LabelScheme
from face_parser.postprocess import class_probabilities
from service.deps import EngineDep, PhotoDep, require_api_key, run_model
from service.errors import InvalidParameter
from service.imaging import OUTPUT_FORMATS, encode_image
from service.recolor import HAIR_PARTS, LIP_PARTS, TEETH_PARTS, ColorRequest, parse_hex_color, recolor

router = APIRouter(tags=["recolor"], dependencies=[Depends(require_api_key)])


def color_request(field: str, value: str | None, intensity: float) -> ColorRequest | None:
    if value is None or value == "":
        return None
    try:
        return ColorRequest(parse_hex_color(value), intensity)
    except ValueError as exc:
        raise InvalidParameter(f"{field}: {exc}") from None


def part_probabilities(scores_khw: torch.Tensor, labels: LabelScheme, size: tuple[int, int], parts) -> dict:
    """Full-size probabilities of just the parts the recolouring needs."""
    probs_khw = class_probabilities(scores_khw[None])[0]
    ids = {name: labels.id_of(name) for name in parts if name in labels.names}
    if not ids:
        return {}
    chosen = probs_khw[list(ids.values())][None]
    full = torch.nn.functional.interpolate(chosen, size=size, mode="bilinear", align_corners=False)[0]
    return {name: full[i].numpy() for i, name in enumerate(ids)}


def render(scores_khw, photo_hwc: np.ndarray, labels: LabelScheme, lips, hair, fmt: str) -> bytes:
    parts = (LIP_PARTS + TEETH_PARTS if lips else ()) + (HAIR_PARTS if hair else ())
    probs = part_probabilities(scores_khw, labels, photo_hwc.shape[:2], parts)
    return encode_image(recolor(photo_hwc, probs, lips, hair), fmt)


@router.post("/recolor", summary="Recolour lips and/or hair; returns the photo at its original size")
async def recolor_photo(
    request: Request, photo: PhotoDep, engine: EngineDep,
    lip_color: Annotated[str | None, Form(description="#RRGGBB")] = None,
    hair_color: Annotated[str | None, Form(description="#RRGGBB")] = None,
    lip_intensity: Annotated[float, Form(ge=0.0, le=1.0)] = 0.7,
    hair_intensity: Annotated[float, Form(ge=0.0, le=1.0)] = 0.8,
    format: Annotated[Literal["png", "jpeg", "webp"], Form()] = "png",
) -> Response:
    lips = color_request("lip_color", lip_color, lip_intensity)
    hair = color_request("hair_color", hair_color, hair_intensity)
    if lips is None and hair is None:
        raise InvalidParameter("give lip_color and/or hair_color as #RRGGBB")
    scores = await run_model(request, engine, photo)
    body = await run_in_threadpool(render, scores, photo, engine.parser.labels, lips, hair, format)
    return Response(body, media_type=OUTPUT_FORMATS[format][1], headers={"X-Model-Version": engine.parser.version})
