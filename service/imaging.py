"""Upload bytes -> RGB array, and arrays -> image bytes.

The service's pixel limit is checked from the header, before any pixel is decoded, and
Pillow's own decompression-bomb guard stays on as a backstop. Decoding touches no
process-wide state: ``Image.MAX_IMAGE_PIXELS`` keeps Pillow's default (an error above
twice it, ~179 M pixels, whatever the service's limit), so concurrent requests and other
Pillow users in the process cannot see each other's limits.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from service.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType

ACCEPTED_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WebP", "BMP": "BMP"}
OUTPUT_FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}
# The longest side each output format holds (PNG's 2^31 - 1, libjpeg's 65500, WebP's 14 bits): a decodable
# upload can be longer, so answers are checked against it before any work is done for them.
OUTPUT_MAX_SIDE = {"png": 2**31 - 1, "jpeg": 65500, "webp": 16383}

# Between 1x and 2x its limit Pillow only warns, before our header check runs; the check refuses or
# allows those sizes by the service's own limit, so the warning would add nothing but log lines (and
# an entry per distinct size in PIL.Image's warning registry). Silenced once, at import.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode an upload to ``(H, W, 3)`` uint8 RGB with EXIF orientation applied.

    Raises 400 (not an image, truncated), 415 (another format), 413 (too many pixels).
    """
    if not data:
        raise InvalidImage("the uploaded file is empty")
    try:
        with Image.open(io.BytesIO(data)) as im:
            _check_header(im, max_pixels)
            im.seek(0)  # animated images: the first frame
            im.load()
            return _to_rgb(_upright(im))
    except Image.DecompressionBombError:  # Pillow's backstop: more than 2 x Image.MAX_IMAGE_PIXELS
        limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or max_pixels))
        raise PayloadTooLarge(f"image has too many pixels (limit {limit})") from None
    except UnidentifiedImageError:
        raise InvalidImage("the upload is not a readable image (JPEG, PNG, WebP or BMP expected)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImage(f"the image could not be decoded: {exc}") from None


# EXIF orientation -> the transpose that makes the picture upright (as ImageOps.exif_transpose maps it).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


def _upright(im: Image.Image) -> Image.Image:
    """The picture turned as its EXIF orientation says.

    Not ``ImageOps.exif_transpose``: it also rewrites the EXIF block for the turned copy, and a
    malformed tag anywhere in it (a resolution stored as text, say) then raises TypeError or
    struct.error. Only the orientation is read here; an EXIF block that cannot even be read
    leaves the picture as stored, like a photo without one.
    """
    try:
        orientation = im.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # noqa: BLE001 - metadata only: any parse failure means "no orientation"
        return im
    method = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return im.transpose(method) if method is not None else im


def _check_header(im: Image.Image, max_pixels: int) -> None:
    if im.format not in ACCEPTED_FORMATS:
        raise UnsupportedMediaType(f"image format {im.format} is not supported; send JPEG, PNG, WebP or BMP")
    width, height = im.size
    if width < 1 or height < 1:
        raise InvalidImage(f"image has an empty size {width}x{height}")
    if width * height > max_pixels:
        raise PayloadTooLarge(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any mode (L, LA, P, RGBA, CMYK, 16-bit) -> RGB; transparency is composited on white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float32)
        scale = 65535.0 if arr.max(initial=0) > 255 else 255.0
        return np.repeat((arr / scale * 255).clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return np.asarray(im.convert("RGB"))


def encode_image(image_hwc: np.ndarray, fmt: str, palette: np.ndarray | None = None) -> bytes:
    """Encode ``(H, W, 3)`` RGB or ``(H, W)`` ids (palette PNG when ``palette`` is given)."""
    pil_format, _ = OUTPUT_FORMATS[fmt]
    if palette is not None:
        ids_hw = np.ascontiguousarray(image_hwc, dtype=np.uint8)
        im = Image.frombuffer("P", (ids_hw.shape[1], ids_hw.shape[0]), ids_hw.tobytes(), "raw", "P", 0, 1)
        flat = np.zeros((256, 3), dtype=np.uint8)
        flat[: len(palette)] = palette
        im.putpalette(flat.ravel().tolist())
    else:
        im = Image.fromarray(image_hwc)
    buf = io.BytesIO()
    options = {"PNG": {"compress_level": 1}, "JPEG": {"quality": 92}, "WEBP": {"quality": 90}}[pil_format]
    im.save(buf, format=pil_format, **options)
    return buf.getvalue()
