"""service.imaging: upload bytes -> RGB array (every mode, EXIF, limits) and arrays -> image bytes."""

from __future__ import annotations

import io
import struct
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageOps

from service.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from service.imaging import decode_image, encode_image
from tests.conftest import animated, draw_face, exif_bytes, image_bytes, png_bomb, png_bytes

LIMIT = 4_000_000


def test_png_round_trips_exactly():
    img = draw_face(64, seed=3)[0]
    out = decode_image(png_bytes(img), LIMIT)
    assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
    np.testing.assert_array_equal(out, img)


def test_exif_orientation_is_applied():
    """A 100x50 photo tagged "rotate 90 CW" (orientation 6) is a 50-wide, 100-high picture."""
    img = np.zeros((50, 100, 3), np.uint8)
    img[:, :50] = (255, 0, 0)  # left half red: after the rotation it is the top half
    data = png_bytes(img, "PNG", exif=exif_bytes(orientation=6))
    out = decode_image(data, LIMIT)
    assert out.shape == (100, 50, 3)
    assert (out[:45, :, 0] > 200).all() and (out[55:, :, 0] < 50).all()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_turns_as_pillow_does(orientation):
    img = draw_face(24, seed=5)[0][:, :20]  # not square, not symmetric
    data = png_bytes(img, "PNG", exif=exif_bytes(orientation=orientation))
    with Image.open(io.BytesIO(data)) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    np.testing.assert_array_equal(decode_image(data, LIMIT), expected)


def test_malformed_exif_tag_still_turns_the_photo():
    """Orientation 6 beside a resolution stored as text: Pillow's exif_transpose raises TypeError here."""
    entries = [struct.pack("<HHI4s", 0x0112, 3, 1, struct.pack("<HH", 6, 0)),
               struct.pack("<HHI4s", 0x011A, 2, 3, b"72\x00\x00")]
    tiff = b"II*\x00" + struct.pack("<IH", 8, len(entries)) + b"".join(entries) + struct.pack("<I", 0)
    img = np.zeros((50, 100, 3), np.uint8)
    img[:, :50] = (255, 0, 0)
    out = decode_image(png_bytes(img, "JPEG", exif=b"Exif\x00\x00" + tiff), LIMIT)
    assert out.shape == (100, 50, 3)
    assert (out[:45, :, 0] > 200).all() and (out[55:, :, 0] < 50).all()


def test_16_bit_png_is_scaled_to_8_bit():
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    im = Image.frombytes("I;16", (3, 1), arr.astype("<u2").tobytes())
    data = image_bytes(im, "PNG")
    out = decode_image(data, LIMIT)
    assert out.shape == (1, 3, 3)
    assert out[0, :, 0].tolist() == [0, 127, 255]
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_la_is_composited_on_white():
    im = Image.new("LA", (4, 2), (0, 255))
    im.putpixel((0, 0), (0, 0))  # fully transparent black -> white
    out = decode_image(image_bytes(im, "PNG"), LIMIT)
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[1, 1].tolist() == [0, 0, 0]


def test_palette_png_with_transparency_is_composited_on_white():
    im = Image.new("P", (4, 4), 1)
    im.putpalette([10, 20, 30, 200, 0, 0] + [0] * 762)
    im.putpixel((0, 0), 0)
    data = image_bytes(im, "PNG", transparency=0)
    out = decode_image(data, LIMIT)
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[3, 3].tolist() == [200, 0, 0]


def test_cmyk_jpeg_becomes_rgb():
    data = image_bytes(Image.new("CMYK", (16, 8), (0, 255, 255, 0)), "JPEG", quality=95)
    out = decode_image(data, LIMIT)
    assert out.shape == (8, 16, 3)
    r, g, b = out[4, 8].astype(int)
    assert r > 200 and g < 60 and b < 60  # CMYK (0, 255, 255, 0) is red


def test_animated_webp_gives_its_first_frame():
    out = decode_image(animated("WEBP", size=(48, 40)), LIMIT)
    assert out.shape == (40, 48, 3)
    assert out[20, 24].tolist() == [255, 0, 0]


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_other_formats_are_unsupported(fmt):
    data = image_bytes(Image.new("RGB", (8, 8), (1, 2, 3)), fmt)
    with pytest.raises(UnsupportedMediaType, match=fmt):
        decode_image(data, LIMIT)


def test_animated_gif_is_unsupported():
    with pytest.raises(UnsupportedMediaType):
        decode_image(animated("GIF"), LIMIT)


@pytest.mark.parametrize("data", [b"", b"hello, world", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"],
                         ids=["empty", "text", "png-signature-only", "jpeg-soi-only"])
def test_non_images_are_invalid(data):
    with pytest.raises(InvalidImage):
        decode_image(data, LIMIT)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_images_are_invalid(fmt):
    data = png_bytes(draw_face(128, seed=0)[0], fmt)
    with pytest.raises(InvalidImage):
        decode_image(data[: len(data) // 2], LIMIT)


def test_pixel_limit_is_checked_before_decoding():
    data = png_bytes(np.zeros((30, 40, 3), np.uint8))
    assert decode_image(data, 1200).shape == (30, 40, 3)
    with pytest.raises(PayloadTooLarge, match="pixels"):
        decode_image(data, 1199)


def test_decompression_bomb_is_refused():
    bomb = png_bomb(20000, 20000)
    assert len(bomb) < 200_000  # small on the wire, 400 megapixels when decoded
    with pytest.raises(PayloadTooLarge):
        decode_image(bomb, LIMIT)


def test_decoding_leaves_process_wide_state_alone():
    """No per-request change to Pillow's global limit or to the warning filters (neither is thread-safe)."""
    pillow_limit, filters = Image.MAX_IMAGE_PIXELS, list(warnings.filters)
    small = png_bytes(np.zeros((30, 40, 3), np.uint8))
    decode_image(small, 1200)
    for data, limit in ((small, 1199), (png_bomb(20000, 20000), LIMIT)):
        with pytest.raises(PayloadTooLarge):
            decode_image(data, limit)
    assert Image.MAX_IMAGE_PIXELS == pillow_limit
    assert warnings.filters == filters


def test_pillow_bomb_guard_stays_on_above_the_configured_limit():
    """A limit set higher than Pillow's guard does not switch the guard off: 400 M pixels are still refused."""
    assert Image.MAX_IMAGE_PIXELS is not None
    with pytest.raises(PayloadTooLarge, match=f"limit {2 * Image.MAX_IMAGE_PIXELS}"):
        decode_image(png_bomb(20000, 20000), 10**12)


def test_concurrent_decodes_with_different_limits_do_not_interfere():
    """Each call is judged by its own limit only. (A per-call global made these race; threads switch
    every microsecond here so that such a race would show.)"""
    small = png_bytes(np.zeros((30, 40, 3), np.uint8))  # 1200 pixels
    face = png_bytes(draw_face(64, seed=4)[0])  # 4096 pixels: over twice 1199

    def decode(i: int) -> str:
        data, limit = (small, 1199) if i % 2 else (face, LIMIT)
        try:
            return f"{decode_image(data, limit).shape}"
        except PayloadTooLarge:
            return "413"

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(decode, range(400)))
    finally:
        sys.setswitchinterval(interval)
    assert results == ["413" if i % 2 else "(64, 64, 3)" for i in range(400)]


def test_huge_exif_block_is_fine():
    img = draw_face(64, seed=2)[0]
    for data in (png_bytes(img, "JPEG", exif=exif_bytes(comment_size=60_000)),
                 png_bytes(img, "PNG", exif=exif_bytes(orientation=1, comment_size=1_000_000))):
        assert decode_image(data, LIMIT).shape == (64, 64, 3)


def test_extreme_aspect_ratios_decode():
    assert decode_image(png_bytes(np.full((1, 1, 3), 7, np.uint8)), LIMIT).tolist() == [[[7, 7, 7]]]
    assert decode_image(png_bytes(np.zeros((1, 20000, 3), np.uint8)), LIMIT).shape == (1, 20000, 3)


def test_encode_palette_png_keeps_class_ids_and_palette():
    ids = np.arange(12, dtype=np.uint8).reshape(3, 4)
    palette = np.array([[i, 2 * i, 3 * i] for i in range(12)], dtype=np.uint8)
    with Image.open(io.BytesIO(encode_image(ids, "png", palette=palette))) as im:
        assert im.mode == "P" and im.size == (4, 3)
        np.testing.assert_array_equal(np.asarray(im), ids)
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), palette[ids])


@pytest.mark.parametrize("fmt,pil", [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_encode_rgb_in_each_output_format(fmt, pil):
    img = draw_face(40, seed=5)[0]
    with Image.open(io.BytesIO(encode_image(img, fmt))) as im:
        assert im.format == pil and im.size == (40, 40) and im.mode == "RGB"
        if fmt == "png":
            np.testing.assert_array_equal(np.asarray(im), img)
