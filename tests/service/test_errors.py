"""Bad input through the ASGI app: each gets the right 4xx as ``{"error", "detail"}`` JSON, and the
service answers a normal request right after. Odd but valid images get a 200 at the right size."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import animated, draw_face, exif_bytes, image_bytes, png_bomb, png_bytes

MAX_UPLOAD = 2 * 1024 * 1024  # make_settings' defaults
MAX_PIXELS = 4_000_000


@pytest.fixture(scope="module")
def api(make_module_client):
    return make_module_client()


@pytest.fixture(scope="module")
def good_png() -> bytes:
    return png_bytes(draw_face(64, seed=7)[0])


def post_image(client, data: bytes, filename="photo", content_type="application/octet-stream", **params):
    return client.post("/parse", params=params, files={"image": (filename, data, content_type)})


def assert_error(r, status: int, code: str | None = None):
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error", "detail"}, body
    assert isinstance(body["error"], str) and isinstance(body["detail"], str) and body["detail"]
    if code:
        assert body["error"] == code


def assert_still_serving(client, good_png: bytes):
    r = post_image(client, good_png)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"


def face_jpeg(size=96) -> bytes:
    return png_bytes(draw_face(size, seed=0)[0], "JPEG", quality=90)


def face_png_big() -> bytes:
    return png_bytes(draw_face(160, seed=0)[0])


def solid_png(width: int, height: int) -> bytes:
    return image_bytes(Image.new("L", (width, height), 128), "PNG")


BAD_UPLOADS = {
    "not-an-image": (lambda: b"this is plain text, not a photo", 400, "invalid_image"),
    "zero-bytes": (lambda: b"", 400, "invalid_image"),
    "truncated-jpeg": (lambda: face_jpeg()[: len(face_jpeg()) // 2], 400, "invalid_image"),
    "truncated-png": (lambda: face_png_big()[: len(face_png_big()) // 2], 400, "invalid_image"),
    "jpeg-header-only": (lambda: face_jpeg()[:20], 400, "invalid_image"),
    "gif": (lambda: image_bytes(Image.new("RGB", (16, 16), (1, 2, 3)), "GIF"), 415, "unsupported_media_type"),
    "animated-gif": (lambda: animated("GIF"), 415, "unsupported_media_type"),
    "tiff": (lambda: image_bytes(Image.new("RGB", (16, 16), (1, 2, 3)), "TIFF"), 415, "unsupported_media_type"),
    "over-max-upload": (lambda: face_jpeg() + b"\0" * (MAX_UPLOAD - len(face_jpeg()) + 1), 413, "payload_too_large"),
    "far-over-max-upload": (lambda: b"\0" * (MAX_UPLOAD * 3 // 2), 413, "payload_too_large"),
    "over-max-pixels": (lambda: solid_png(2001, 2000), 413, "payload_too_large"),
    "decompression-bomb": (lambda: png_bomb(20000, 20000), 413, "payload_too_large"),
    "zero-height-bmp": (lambda: image_bytes(Image.new("RGB", (4, 1)), "BMP")[:22] + b"\0\0\0\0"
                        + image_bytes(Image.new("RGB", (4, 1)), "BMP")[26:], 400, "invalid_image"),
}


@pytest.mark.parametrize("name", list(BAD_UPLOADS))
def test_bad_upload_gets_a_json_4xx_and_the_service_goes_on(api, good_png, name):
    make, status, code = BAD_UPLOADS[name]
    assert_error(post_image(api, make()), status, code)
    assert_still_serving(api, good_png)


def test_streamed_upload_over_the_limit_is_413(api, good_png):
    """No Content-Length (chunked): the body limit must still answer 413 in the API's JSON shape."""
    head = (b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n")

    def chunks():
        yield head
        for _ in range(MAX_UPLOAD // 65536 + 4):
            yield b"\0" * 65536
        yield b"\r\n--xyz--\r\n"

    r = api.post("/parse", content=chunks(), headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert_error(r, 413, "payload_too_large")
    assert_still_serving(api, good_png)


def exif_rotated() -> bytes:
    return png_bytes(np.ascontiguousarray(draw_face(100, seed=1)[0][:50]), "JPEG", exif=exif_bytes(orientation=6))


def sixteen_bit_png() -> bytes:
    arr = (np.linspace(0, 65535, 40 * 30).reshape(30, 40)).astype("<u2")
    return image_bytes(Image.frombytes("I;16", (40, 30), arr.tobytes()), "PNG")


def palette_png_with_transparency() -> bytes:
    im = Image.fromarray(draw_face(48, seed=3)[0]).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return image_bytes(im, "PNG", transparency=0)


ODD_BUT_VALID = {  # name: (bytes, expected (width, height) of the answer)
    "1x1": (lambda: png_bytes(np.full((1, 1, 3), 200, np.uint8)), (1, 1)),
    "20000x1": (lambda: png_bytes(np.full((1, 20000, 3), 90, np.uint8)), (20000, 1)),
    "1x20000": (lambda: png_bytes(np.full((20000, 1, 3), 90, np.uint8)), (1, 20000)),
    "16-bit-png": (sixteen_bit_png, (40, 30)),
    "cmyk-jpeg": (lambda: image_bytes(Image.new("CMYK", (40, 30), (10, 200, 100, 5)), "JPEG"), (40, 30)),
    "palette-png-transparency": (palette_png_with_transparency, (48, 48)),
    "la-png": (lambda: image_bytes(Image.new("LA", (33, 21), (100, 128)), "PNG"), (33, 21)),
    "rgba-png": (lambda: image_bytes(Image.new("RGBA", (21, 33), (10, 20, 30, 0)), "PNG"), (21, 33)),
    "grayscale-jpeg": (lambda: image_bytes(Image.new("L", (30, 20), 77), "JPEG"), (30, 20)),
    "bmp": (lambda: image_bytes(Image.fromarray(draw_face(32)[0]), "BMP"), (32, 32)),
    "animated-webp": (lambda: animated("WEBP", size=(48, 40)), (48, 40)),
    "huge-exif-jpeg": (lambda: png_bytes(draw_face(64)[0], "JPEG", exif=exif_bytes(comment_size=60_000)), (64, 64)),
    "huge-exif-png": (lambda: png_bytes(draw_face(64)[0], "PNG", exif=exif_bytes(comment_size=1_000_000)), (64, 64)),
    "exif-rotation": (exif_rotated, (50, 100)),  # 100x50 stored, orientation 6: a 50-wide, 100-high photo
    "exactly-max-pixels": (lambda: solid_png(2000, 2000), (2000, 2000)),
}


@pytest.mark.parametrize("name", list(ODD_BUT_VALID))
def test_odd_but_valid_images_are_parsed_at_their_size(api, name):
    make, size = ODD_BUT_VALID[name]
    r = post_image(api, make())
    assert r.status_code == 200, r.text
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.mode == "P" and im.size == size


def test_exif_rotation_applies_to_recolor_too(api):
    r = api.post("/recolor", data={"lip_color": "#c81e3c"}, files={"image": ("a.jpg", exif_rotated(), "image/jpeg")})
    assert r.status_code == 200
    assert Image.open(io.BytesIO(r.content)).size == (50, 100)


@pytest.mark.parametrize("case", ["wrong-field-name", "missing-field", "not-multipart", "json-body", "empty-body"])
def test_malformed_requests_are_422(api, good_png, case):
    if case == "wrong-field-name":
        r = api.post("/parse", files={"file": ("a.png", good_png, "image/png")})
    elif case == "missing-field":
        r = api.post("/parse", data={"format": "png"})
    elif case == "not-multipart":
        r = api.post("/parse", content=good_png, headers={"content-type": "image/png"})
    elif case == "json-body":
        r = api.post("/parse", json={"image": "aGVsbG8="})
    else:
        r = api.post("/parse")
    assert_error(r, 422, "invalid_parameter")
    assert "image" in r.json()["detail"]
    assert_still_serving(api, good_png)


def test_image_field_sent_as_text_is_rejected(api, good_png):
    r = api.post("/parse", data={"image": "not a file"})
    assert_error(r, 422, "invalid_parameter")
    assert_still_serving(api, good_png)


@pytest.mark.parametrize("path,params,form", [
    ("/parse", {"format": "jpeg"}, None),
    ("/parse", {"opacity": "2"}, None),
    ("/parse", {"opacity": "nan"}, None),
    ("/parse", {"classes": "nose,ghost"}, None),
    ("/recolor", None, {"lip_color": "#ff0000", "lip_intensity": "9"}),
    ("/recolor", None, {"hair_color": "blue"}),
    ("/recolor", None, {"lip_color": "#ff0000", "format": "bmp"}),
])
def test_out_of_range_parameters_are_422(api, good_png, path, params, form):
    r = api.post(path, params=params, data=form, files={"image": ("a.png", good_png, "image/png")})
    assert_error(r, 422, "invalid_parameter")
    assert_still_serving(api, good_png)


@pytest.mark.parametrize("method,path,status", [("GET", "/nope", 404), ("GET", "/parse", 405),
                                                ("DELETE", "/recolor", 405), ("POST", "/healthz", 405)])
def test_unknown_routes_and_methods_use_the_error_shape(api, method, path, status):
    r = api.request(method, path)
    assert_error(r, status, {404: "not_found", 405: "method_not_allowed"}[status])
    if status == 405:
        assert r.headers["allow"]  # the allowed methods still reach the client
