"""The same model behind other servers, for the load benchmark: decode, forward and encode are shared.

Only how requests reach the forward pass differs: once per request (``plain_fastapi``) or batched by
LitServe (``litserve_app``). Each stage reuses the service's own code, so the comparison is of batching.
"""

from __future__ import annotations

import numpy as np
import torch

from face_parser.modeling import FaceParser
from face_parser.postprocess import label_map_bounded
from service.imaging import decode_image
from service.masks import class_id_png
from service.settings import get_settings


def decode(data: bytes) -> np.ndarray:
    """Upload bytes -> ``(H, W, 3)`` uint8 RGB, exactly as the service decodes."""
    return decode_image(data, get_settings().max_image_pixels)


def forward(parser: FaceParser, photos_hwc: list[np.ndarray]) -> list[torch.Tensor]:
    """Photos -> one forward pass -> each photo's ``(K, S/4, S/4)`` class scores."""
    return parser.score_images(photos_hwc)


def encode(parser: FaceParser, scores_khw: torch.Tensor, photo_hwc: np.ndarray) -> bytes:
    """Class scores -> class-id PNG at the photo's size (the service's ``format=png&faces=whole`` answer)."""
    labels_hw = label_map_bounded(scores_khw, photo_hwc.shape[:2], get_settings().max_output_side).numpy()
    return class_id_png(labels_hw, parser.labels.palette())


def warm_up(parser: FaceParser, batch: int) -> None:
    """One forward pass at ``batch`` so that the first request pays no lazy set-up."""
    size = parser.preprocess.size
    forward(parser, [np.zeros((size, size, 3), dtype=np.uint8)] * batch)
