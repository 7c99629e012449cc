"""POST /parse: a photo in, its parsing out (class-id PNG, colour PNG or COCO RLE JSON)."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from face_parser.labels import LabelScheme
from face_parser.pipeline import FaceParsing
from service.deps import EngineDep, PhotoDep, SettingsDep, decimal_below, require_api_key
from service.errors import InvalidParameter
from service.faces import FACES_DESCRIPTION, FacesMode, faces_headers, faces_summary, parse_photo
from service.masks import class_id_png, color_png, rle_json
from service.threads import run_in_worker

router = APIRouter(tags=["parse"], dependencies=[Depends(require_api_key)])


def parse_class_filter(classes: str | None, labels: LabelScheme) -> list[int] | None:
    """``"hair,u_lip,12"`` -> class ids; names or ids, comma-separated (None: no filter)."""
    if not classes:
        return None
    tokens = [t.strip() for t in classes.split(",") if t.strip()]
    if not tokens:  # only commas: answering no class at all would hide the mistake
        raise InvalidParameter("classes: no class named; give names or ids, comma-separated, such as hair,u_lip")
    return [class_id(token, labels) for token in tokens]


def class_id(token: str, labels: LabelScheme) -> int:
    """A class by name or id; 422 with the known names otherwise."""
    if token in labels.names:
        return labels.id_of(token)
    found = decimal_below(token, len(labels))
    if found is None:
        raise InvalidParameter(f"classes: unknown class {token!r}; known: {', '.join(labels.names)}")
    return found


def render(parsing: FaceParsing, photo_hwc: np.ndarray, fmt: str, overlay: bool, opacity: float,
           max_side: int, labels: LabelScheme, version: str, class_ids: list[int] | None):
    """Post-process and encode (runs in a worker thread)."""
    labels_hw = parsing.label_map(photo_hwc.shape[:2], max_side)
    palette = labels.palette()
    if fmt == "rle":
        return {**rle_json(labels_hw, labels, version, class_ids), **faces_summary(parsing)}
    if fmt == "color":
        return color_png(labels_hw, palette, photo_hwc if overlay else None, opacity)
    return class_id_png(labels_hw, palette)


@router.post("/parse", summary="Parse a face photo into the model's classes",
             responses={200: {"content": {"image/png": {}, "application/json": {}}}})
async def parse(
    request: Request, photo: PhotoDep, engine: EngineDep, settings: SettingsDep,
    format: Annotated[Literal["png", "color", "rle"],
                      Query(description="png: class ids; color: rendering; rle: COCO RLE JSON")] = "png",
    overlay: Annotated[bool, Query(description="color: blend over the photo")] = False,
    opacity: Annotated[float, Query(ge=0.0, le=1.0, description="color + overlay: weight of the colours")] = 0.5,
    classes: Annotated[str | None, Query(description="rle: comma-separated class names or ids to include")] = None,
    faces: Annotated[FacesMode, Query(description=FACES_DESCRIPTION)] = "auto",
) -> Response:
    parser = engine.parser
    class_ids = parse_class_filter(classes, parser.labels)
    parsing = await parse_photo(request, engine, photo, faces)
    body = await run_in_worker(render, parsing, photo, format, overlay, opacity, settings.max_output_side,
                                   parser.labels, parser.version, class_ids)
    headers = {"X-Model-Version": parser.version, **faces_headers(parsing)}
    if format == "rle":
        return JSONResponse(body, headers=headers)
    return Response(body, media_type="image/png", headers=headers)
