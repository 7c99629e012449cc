"""The page's Live mode end to end: headless Chromium with a fake camera, the real server with the shipped model.

Chromium reads its camera from a Y4M file the test writes (``--use-fake-device-for-media-stream
--use-file-for-fake-video-capture``): the astronaut portrait (scikit-image, public domain), moved and
zoomed frame by frame (:func:`benchmarks.live.astronaut_frames`). The test turns the lips green,
a colour the portrait does not have, and checks that recoloured frames arrive and have green lips
where the camera's frames have none. Screenshots go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.live import astronaut_frames
from tests.test_web_page import (  # noqa: F401  (fixtures)
    _JS_PIXELS,
    CHROMIUM_ARGS,
    UI_TIMEOUT_MS,
    _screenshot,
    chromium_path,
    server_url,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SIZE = 480
LIP_GREEN = "#10c040"
FACE_BOX = (150, 110, 300, 240)  # x0, y0, x1, y1 around the astronaut's mouth in every frame


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 15) -> Path:
    """Frames (``(H, W, 3)`` uint8 RGB) as a 4:2:0 YUV4MPEG2 file, the format Chromium's fake camera reads."""
    height, width = frames[0].shape[:2]
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        out.writelines(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes() for frame in frames)
    return path


def green_pixels(rgb_hwc: np.ndarray) -> int:
    """Pixels of the mouth box whose hue is the lipstick's (green, saturated)."""
    x0, y0, x1, y1 = FACE_BOX
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb_hwc[y0:y1, x0:x1]), cv2.COLOR_RGB2HSV)
    return int(((hsv[..., 0] > 45) & (hsv[..., 0] < 85) & (hsv[..., 1] > 60) & (hsv[..., 2] > 40)).sum())


@pytest.fixture(scope="module")
def camera_context(chromium_path, tmp_path_factory):  # noqa: F811
    from playwright.sync_api import sync_playwright

    video = write_y4m(tmp_path_factory.mktemp("camera") / "astronaut.y4m", astronaut_frames(45, SIZE))
    args = CHROMIUM_ARGS + ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                            f"--use-file-for-fake-video-capture={video}"]
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium_profile")), executable_path=str(chromium_path), headless=True,
            args=args, viewport={"width": 1280, "height": 1000})
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def camera_page(camera_context, server_url):  # noqa: F811
    """A fresh page per test: each one starts with the camera off and nothing wrapped."""
    page = camera_context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.console_errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))  # type: ignore[attr-defined]
    page.goto(server_url + "/")
    yield page
    page.close()


def pixels(page, selector: str) -> np.ndarray:
    """What ``selector`` (an <img> or <video>) shows now, at its natural size, as ``(H, W, 3)`` uint8."""
    import base64

    script = _JS_PIXELS.strip().replace("img.naturalWidth", "(img.naturalWidth || img.videoWidth)") \
        .replace("img.naturalHeight", "(img.naturalHeight || img.videoHeight)")
    got = page.evaluate(f"sel => ({script})(document.querySelector(sel))", selector)
    rgba = np.frombuffer(base64.b64decode(got["rgba"]), dtype=np.uint8)
    return rgba.reshape(got["h"], got["w"], 4)[..., :3]


def test_photo_mode_is_the_default_and_needs_no_camera(camera_page):
    assert camera_page.evaluate("document.body.dataset.mode") == "photo"
    assert camera_page.locator("#live-section").is_hidden()
    assert camera_page.locator("#file-input").count() == 1
    assert camera_page.evaluate("document.body.dataset.live") == "off"


def test_live_mode_shows_the_camera_recoloured(camera_page):
    page = camera_page
    page.check("#mode-live")
    assert page.locator("#live-section").is_visible()
    assert page.locator("#drop-zone").is_hidden()
    page.evaluate(f"""() => {{
        const input = document.querySelector('#lip-color');
        input.value = '{LIP_GREEN}';
        input.dispatchEvent(new Event('input', {{ bubbles: true }}));
        const intensity = document.querySelector('#lip-intensity');
        intensity.value = '1';
        intensity.dispatchEvent(new Event('input', {{ bubbles: true }}));
        document.querySelector('#hair-enabled').click();
        document.querySelector('#lip-finish').value = 'gloss';
    }}""")
    page.click("#live-start")
    page.wait_for_function("Number(document.body.dataset.liveFrames || 0) >= 8 "
                           "|| document.body.dataset.live === 'error'")
    assert page.evaluate("document.body.dataset.live") == "streaming", page.inner_text("#live-status")
    stats = page.inner_text("#live-stats")
    assert "fps" in stats and "ms" in stats, stats
    camera = pixels(page, "#live-camera")
    _screenshot(page, "05-live")
    page.click("#live-stop")  # the last frame stays on show
    assert page.evaluate("document.body.dataset.live") == "off"
    page.wait_for_function("document.querySelector('#live-img').complete")
    shown = pixels(page, "#live-img")
    assert shown.shape == (SIZE, SIZE, 3) and camera.shape == (SIZE, SIZE, 3)
    assert green_pixels(camera) < 20
    assert green_pixels(shown) > 150, green_pixels(shown)
    page.set_viewport_size({"width": 360, "height": 780})
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    _screenshot(page, "06-live-narrow")
    assert overflow <= 0, f"the live view is {overflow}px wider than a 360px window"
    assert not page.console_errors, page.console_errors  # type: ignore[attr-defined]


# JS: holds getUserMedia back until window.__openCamera() is called (a camera that takes its time to
# open, or a permission prompt not yet answered), keeps the tracks it hands out in window.__tracks and
# counts the WebSockets the page opens in window.__sockets.
_JS_SLOW_CAMERA = """
() => {
  window.__tracks = [];
  window.__sockets = 0;
  const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  const opened = new Promise(resolve => { window.__openCamera = resolve; });
  navigator.mediaDevices.getUserMedia = constraints => opened
    .then(() => getUserMedia(constraints))
    .then(stream => { window.__tracks.push(...stream.getTracks()); return stream; });
  const RealWebSocket = window.WebSocket;
  window.WebSocket = class extends RealWebSocket {
    constructor(...args) { super(...args); window.__sockets += 1; }
  };
}
"""


@pytest.mark.parametrize("cancel", ["stop", "photo mode"])
def test_cancel_while_the_camera_opens_stops_it(camera_page, cancel):
    page = camera_page
    page.check("#mode-live")
    page.evaluate(_JS_SLOW_CAMERA)
    page.click("#live-start")
    assert page.evaluate("document.body.dataset.live") == "starting"
    if cancel == "stop":
        page.click("#live-stop")
    else:
        page.check("#mode-photo")
    assert page.evaluate("document.body.dataset.live") == "off"

    page.evaluate("window.__openCamera()")  # the camera opens only now, after the user gave up on it
    page.wait_for_function("window.__tracks.length > 0")
    page.wait_for_timeout(1500)  # time enough to play the video and open a socket, were it to
    got = page.evaluate("""() => ({live: document.body.dataset.live, sockets: window.__sockets,
        tracks: window.__tracks.map(t => t.readyState), frames: document.body.dataset.liveFrames || null,
        camera: document.querySelector('#live-camera').srcObject !== null})""")
    assert got == {"live": "off", "sockets": 0, "tracks": ["ended"] * len(got["tracks"]), "frames": None,
                   "camera": False}, got
    assert not page.console_errors, page.console_errors  # type: ignore[attr-defined]


# JS: keeps the object URLs the page has not revoked in window.__urls, the most there were at once
# between two tasks in window.__maxUrls, and the page's WebSockets in window.__sockets.
_JS_COUNT_URLS = """
() => {
  window.__urls = new Set();
  window.__maxUrls = 0;
  const create = URL.createObjectURL.bind(URL), revoke = URL.revokeObjectURL.bind(URL);
  URL.createObjectURL = blob => { const url = create(blob); window.__urls.add(url); return url; };
  URL.revokeObjectURL = url => { window.__urls.delete(url); revoke(url); };
  setInterval(() => { window.__maxUrls = Math.max(window.__maxUrls, window.__urls.size); }, 2);
  window.__sockets = [];
  const RealWebSocket = window.WebSocket;
  window.WebSocket = class extends RealWebSocket {
    constructor(...args) { super(...args); window.__sockets.push(this); }
  };
}
"""

# JS: three answers arriving in one task (two frames in flight come back together), before the
# <img> has had a chance to load the first.
_JS_BURST_OF_ANSWERS = """
async () => {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 32;
  const jpeg = await new Promise(resolve => canvas.toBlob(resolve, "image/jpeg"));
  const ws = window.__sockets[window.__sockets.length - 1];
  for (let i = 0; i < 3; i++) ws.dispatchEvent(new MessageEvent("message", { data: jpeg }));
}
"""


def test_live_frames_leave_no_object_urls_behind(camera_page):
    page = camera_page
    page.check("#mode-live")
    page.evaluate(_JS_COUNT_URLS)
    page.click("#live-start")
    frames = "Number(document.body.dataset.liveFrames || 0)"
    page.wait_for_function(f"{frames} >= 4 || document.body.dataset.live === 'error'")
    assert page.evaluate("document.body.dataset.live") == "streaming", page.inner_text("#live-status")
    page.evaluate(_JS_BURST_OF_ANSWERS)
    shown = page.evaluate(frames)
    page.wait_for_function(f"{frames} >= {shown + 3}")  # real frames again
    assert page.evaluate("window.__maxUrls") <= 1, page.evaluate("[...window.__urls]")

    page.click("#live-stop")
    page.wait_for_function("document.querySelector('#live-img').complete")
    page.wait_for_timeout(200)
    assert page.evaluate("window.__urls.size") == 0, page.evaluate("[...window.__urls]")
    assert page.evaluate("document.querySelector('#live-img').naturalWidth") > 0  # the last frame stays on show
    assert not page.console_errors, page.console_errors  # type: ignore[attr-defined]
