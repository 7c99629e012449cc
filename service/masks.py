"""Label map -> answers: class-id PNG, colour rendering, COCO RLE JSON."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from face_parser.labels import LabelScheme
from service.imaging import encode_image


def class_id_png(labels_hw: np.ndarray, palette: np.ndarray) -> bytes:
    """Palette PNG whose pixel values are class ids (and which shows the parsing when viewed)."""
    return encode_image(labels_hw, "png", palette=palette)


def color_png(labels_hw: np.ndarray, palette: np.ndarray, photo_hwc: np.ndarray | None, opacity: float) -> bytes:
    """RGB rendering of the parsing, optionally blended over the photo with ``opacity`` in [0, 1]."""
    colors = palette[labels_hw].astype(np.uint8, copy=False)
    if photo_hwc is not None:  # in uint8: a float blend held 17x the photo's bytes (2 GB for a 40 MP photo)
        colors = cv2.addWeighted(photo_hwc, 1 - opacity, colors, opacity, 0)
    return encode_image(colors, "png")


def rle_json(labels_hw: np.ndarray, labels: LabelScheme, version: str, class_ids: Iterable[int] | None = None) -> dict:
    """COCO RLE (column-major, compressed string counts) for each class present."""
    height, width = labels_hw.shape
    wanted = set(class_ids) if class_ids is not None else None
    present = np.flatnonzero(np.bincount(labels_hw.ravel(), minlength=len(labels)))
    classes = []
    for class_id in present:
        if wanted is not None and class_id not in wanted:
            continue
        rle = coco_mask.encode(np.asfortranarray(labels_hw == class_id, dtype=np.uint8))
        classes.append({
            "id": int(class_id),
            "name": labels.names[class_id],
            "area": int(coco_mask.area(rle)),
            "bbox": [int(v) for v in coco_mask.toBbox(rle)],  # x, y, width, height
            "rle": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
        })
    return {"width": width, "height": height, "model_version": version, "classes": classes}
