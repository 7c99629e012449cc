"""service.masks: class-id PNG, colour rendering and COCO RLE from a label map."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from face_parser.labels import CELEBAMASK_HQ_SCHEME
from service.masks import class_id_png, color_png, rle_json
from tests.conftest import draw_face

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools + numpy 2

LABELS = CELEBAMASK_HQ_SCHEME
PALETTE = LABELS.palette()


def face_labels(size=96, seed=0) -> tuple[np.ndarray, np.ndarray]:
    image, mask = draw_face(size, seed)
    return image, np.ascontiguousarray(mask, dtype=np.uint8)


def decode(png: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(png))
    im.load()
    return im


def test_class_id_png_holds_the_ids_and_shows_the_palette():
    _, labels = face_labels()
    im = decode(class_id_png(labels, PALETTE))
    assert im.format == "PNG" and im.mode == "P" and im.size == (96, 96)
    np.testing.assert_array_equal(np.asarray(im), labels)
    np.testing.assert_array_equal(np.asarray(im.convert("RGB")), PALETTE[labels])


def test_color_png_without_overlay_is_the_palette():
    _, labels = face_labels()
    im = decode(color_png(labels, PALETTE, None, 0.5))
    assert im.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(im), PALETTE[labels])


def test_color_png_overlay_blends_by_opacity():
    photo, labels = face_labels()
    colors = PALETTE[labels].astype(np.float32)
    for opacity in (0.0, 0.3, 1.0):
        out = np.asarray(decode(color_png(labels, PALETTE, photo, opacity))).astype(np.float32)
        expected = photo.astype(np.float32) * (1 - opacity) + colors * opacity
        assert np.abs(out - expected).max() <= 0.51
    np.testing.assert_array_equal(np.asarray(decode(color_png(labels, PALETTE, photo, 0.0))), photo)


def test_an_overlay_is_blended_without_float_copies_of_the_photo():
    """A float blend held ~17x the photo's bytes (numpy 2 promotes uint8 x float to float64): 2 GB at 40 MP."""
    import tracemalloc

    photo = np.zeros((1000, 1000, 3), np.uint8)
    labels = np.zeros((1000, 1000), np.uint8)
    tracemalloc.start()
    color_png(labels, PALETTE, photo, 0.5)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 6 * photo.nbytes


def test_rle_decodes_to_each_class_mask_exactly():
    _, labels = face_labels(size=120, seed=4)
    body = rle_json(labels, LABELS, "v1")
    assert (body["width"], body["height"], body["model_version"]) == (120, 120, "v1")
    present = sorted(np.unique(labels).tolist())
    assert [c["id"] for c in body["classes"]] == present
    union = np.zeros_like(labels, dtype=np.int32)
    for cls in body["classes"]:
        rle = {"size": cls["rle"]["size"], "counts": cls["rle"]["counts"].encode("ascii")}
        mask = coco_mask.decode(rle)
        np.testing.assert_array_equal(mask, labels == cls["id"])
        assert cls["name"] == LABELS.names[cls["id"]]
        assert cls["area"] == int(mask.sum())
        ys, xs = np.nonzero(mask)
        assert cls["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        union += mask
    assert (union == 1).all()  # the classes tile the image


def test_rle_class_filter_keeps_only_the_wanted_classes_present():
    _, labels = face_labels()
    hair, skin, hat = LABELS.id_of("hair"), LABELS.id_of("skin"), LABELS.id_of("hat")
    body = rle_json(labels, LABELS, "v1", class_ids=[hair, skin, hat])
    assert [c["id"] for c in body["classes"]] == [skin, hair]  # hat is absent from the image
    assert rle_json(labels, LABELS, "v1", class_ids=[])["classes"] == []


def test_rle_of_non_square_map_uses_height_width_order():
    labels = np.zeros((3, 5), np.uint8)
    labels[0, 4] = 13
    body = rle_json(labels, LABELS, "v1")
    hair = next(c for c in body["classes"] if c["id"] == 13)
    assert hair["rle"]["size"] == [3, 5] and hair["bbox"] == [4, 0, 1, 1]
