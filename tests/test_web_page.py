"""End-to-end test of the web page: the real server on loopback, driven by headless Debian Chromium.

Playwright for Python drives ``/usr/bin/chromium`` (installed by ``scripts/install_browser.sh``;
``playwright install`` is never run: its browser download cannot be reached here). The server is
started as ``python -m service`` with the shipped model (``models/face-parser``): a tiny random model
finds no lips, and the test checks that the lip region of the shown result changes with the lip
colour. Screenshots go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest

from tests.live_server import live_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODEL = REPO_ROOT / "models" / "face-parser"
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
READY_TIMEOUT_S = 60.0
UI_TIMEOUT_MS = 60_000  # a tiny model on a busy 2-core CPU can still take a few seconds per request
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

# Init script: records the text fields of every FormData the page sends (Chromium does not expose
# multipart bodies that hold a File to the driver), as window.__sent = [{url, fields}].
_JS_RECORD_FORMS = """
(() => {
  window.__sent = [];
  const realFetch = window.fetch.bind(window);
  window.fetch = (input, init) => {
    const body = init && init.body;
    if (body instanceof FormData) {
      const fields = {};
      for (const [k, v] of body.entries()) if (typeof v === "string") fields[k] = v;
      window.__sent.push({ url: String(input), fields });
    }
    return realFetch(input, init);
  };
})();
"""

# JS: pixels of an <img> (drawn onto a canvas) as {w, h, rgba: base64}.
_JS_PIXELS = """
(img) => {
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(img, 0, 0);
  const data = ctx.getImageData(0, 0, c.width, c.height).data;
  let bin = "";
  for (let i = 0; i < data.length; i += 0x8000) bin += String.fromCharCode.apply(null, data.subarray(i, i + 0x8000));
  return { w: c.width, h: c.height, rgba: btoa(bin) };
}
"""


@pytest.fixture(scope="module")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run scripts/install_browser.sh "
                    "(Debian packages chromium, chromium-driver)")
    return CHROMIUM


@pytest.fixture(scope="module")
def server_url(tmp_path_factory, chromium_path) -> str:
    """The real service with the shipped model on a free loopback port, ready (GET /readyz is 200), stopped
    afterwards."""
    log_path = tmp_path_factory.mktemp("web_page_server") / "server.log"
    with live_server(str(SHIPPED_MODEL), log_path, READY_TIMEOUT_S, device="cpu", torch_threads=1) as (base, _):
        yield base


@pytest.fixture(scope="module")
def browser_context(chromium_path, tmp_path_factory):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a broken install, not a reason to skip
        pytest.fail("playwright is not installed: pip install -e '.[test]' (never `playwright install`)")
    profile = tmp_path_factory.mktemp("chromium_profile")  # a fresh --user-data-dir
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(chromium_path),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
            accept_downloads=True,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context, server_url):
    page = browser_context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.console_errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))  # type: ignore[attr-defined]
    page.add_init_script(_JS_RECORD_FORMS)
    page.goto(server_url + "/")
    yield page
    page.close()


def _screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


LIPS_BOX = (104, 158, 152, 182)  # x0, y0, x1, y1 of the lips' ellipse in _face_png


def _lips_mask(size: int = 256, grow_px: int = 0) -> np.ndarray:
    """``(size, size)`` bool: the lips' ellipse of _face_png, grown by ``grow_px``."""
    x0, y0, x1, y1 = LIPS_BOX
    yy, xx = np.mgrid[:size, :size] + 0.5
    rx, ry = (x1 - x0) / 2 + grow_px, (y1 - y0) / 2 + grow_px
    return ((xx - (x0 + x1) / 2) / rx) ** 2 + ((yy - (y0 + y1) / 2) / ry) ** 2 <= 1


def _face_png(path: Path) -> Path:
    """A synthetic, face-like 256x256 photo: skin ellipse, dark hair band, eyes, red lips.

    The shaded eye sockets, the brows and the nostrils are what the Haar face detector of
    ``faces=auto`` (the page's default) needs to find it; the shipped model then parses its lips.
    """
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (256, 256), (200, 215, 230))
    d = ImageDraw.Draw(img)
    d.rectangle([40, 150, 216, 256], fill=(70, 90, 140))  # shoulders
    d.rectangle([104, 170, 152, 210], fill=(215, 170, 140))  # neck
    d.ellipse([48, 20, 208, 120], fill=(60, 38, 25))  # hair, behind the face
    d.ellipse([64, 40, 192, 200], fill=(225, 180, 150))  # face
    d.chord([64, 30, 192, 110], 180, 360, fill=(60, 38, 25))  # fringe
    for x in (96, 160):
        d.ellipse([x - 20, 92, x + 20, 120], fill=(170, 125, 100))  # eye sockets
        d.ellipse([x - 12, 100, x + 12, 112], fill=(200, 190, 185))
        d.ellipse([x - 5, 101, x + 5, 111], fill=(50, 40, 35))
        d.line([x - 14, 90, x + 14, 88], fill=(70, 45, 30), width=7)  # brows
    d.polygon([(128, 110), (120, 145), (136, 145)], fill=(205, 160, 130))  # nose
    for x in (122, 134):
        d.ellipse([x - 4, 140, x + 4, 146], fill=(120, 80, 70))  # nostrils
    d.ellipse(LIPS_BOX, fill=(190, 30, 45))  # lips
    d.line([106, 170, 150, 170], fill=(120, 20, 30), width=2)
    img.save(path)
    return path


def _page_pixels(page, selector: str) -> np.ndarray:
    """The pixels the page shows in ``selector`` (an <img>), as an (H, W, 3) uint8 array."""
    got = page.evaluate(f"sel => ({_JS_PIXELS.strip()})(document.querySelector(sel))", selector)
    rgba = np.frombuffer(base64.b64decode(got["rgba"]), dtype=np.uint8)
    return rgba.reshape(got["h"], got["w"], 4)[..., :3]


def _last_recolor_fields(page) -> dict:
    sent = page.evaluate("window.__sent.filter(s => s.url.endsWith('recolor'))")
    assert sent, "the page sent no recolour request"
    return sent[-1]["fields"]


def _server_recolor(server_url: str, photo: Path, fields: dict) -> np.ndarray:
    """The server's own answer to the same recolour request, as (H, W, 3) uint8."""
    import httpx
    from PIL import Image

    res = httpx.post(server_url + "/recolor", data=fields,
                     files={"image": (photo.name, photo.read_bytes(), "image/png")}, timeout=60)
    assert res.status_code == 200, res.text
    return np.asarray(Image.open(io.BytesIO(res.content)).convert("RGB"))


def _changed_pixels(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, f"image sizes differ: {a.shape} vs {b.shape}"
    return int((np.abs(a.astype(int) - b.astype(int)).max(axis=-1) > 0).sum())


def _wait_state(page, *states: str) -> str:
    page.wait_for_function(
        "states => states.includes(document.body.dataset.state)", arg=list(states), timeout=UI_TIMEOUT_MS
    )
    return page.evaluate("document.body.dataset.state")


def test_upload_parse_and_recolor(page, server_url, tmp_path):
    # The legend comes from GET /v1/model.
    page.wait_for_function("document.querySelectorAll('#legend .legend-item').length > 0")
    assert page.locator("#legend .legend-item").first.inner_text().strip()

    photo = _face_png(tmp_path / "face.png")
    with page.expect_response(lambda r: "/parse" in r.url and r.request.method == "POST") as parse_info:
        page.set_input_files("#file-input", str(photo))
    parse_res = parse_info.value
    assert parse_res.status == 200, parse_res.text()
    page.wait_for_function(
        "document.body.dataset.state !== 'busy'"
        " && (document.querySelector('#result-img').getAttribute('src') || '').startsWith('blob:')"
        " && (document.querySelector('#parsing-img').getAttribute('src') || '').startsWith('blob:')"
        " || document.body.dataset.state === 'error'"
    )
    state = page.evaluate("document.body.dataset.state")
    assert state == "ready", f"state {state!r}, error shown: {page.inner_text('#error')!r}"
    assert page.locator("#error").is_hidden()

    for sel in ("#original-img", "#parsing-img", "#result-img"):
        page.wait_for_function(
            "sel => { const i = document.querySelector(sel); return i.complete && i.naturalWidth > 0; }", arg=sel
        )
    assert page.evaluate("document.querySelector('#parsing-img').naturalWidth") > 0
    download_href = page.get_attribute("#download-link", "href") or ""
    assert download_href.startswith("blob:")
    assert page.get_attribute("#download-link", "download")
    _screenshot(page, "01-first-result")

    first_src = page.get_attribute("#result-img", "src")
    first_fields = _last_recolor_fields(page)
    first_pixels = _page_pixels(page, "#result-img")

    with page.expect_response(lambda r: r.url.endswith("/recolor") and r.request.method == "POST") as recolor_info:
        page.evaluate(
            """() => {
              const input = document.querySelector('#lip-color');
              input.value = '#1e90ff';
              input.dispatchEvent(new Event('input', { bubbles: true }));
              input.dispatchEvent(new Event('change', { bubbles: true }));
            }"""
        )
    recolor_res = recolor_info.value
    assert recolor_res.status == 200, recolor_res.text()

    page.wait_for_function(
        "first => document.body.dataset.state !== 'busy'"
        " && document.querySelector('#result-img').getAttribute('src') !== first"
        " && document.querySelector('#result-img').complete"
        " && document.querySelector('#result-img').naturalWidth > 0",
        arg=first_src,
    )
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#error")
    _screenshot(page, "02-lips-recolored")

    second_fields = _last_recolor_fields(page)
    assert second_fields.get("lip_color", "").lower() == "#1e90ff", second_fields
    assert {k: v for k, v in second_fields.items() if k != "lip_color"} == {
        k: v for k, v in first_fields.items() if k != "lip_color"
    }
    second_pixels = _page_pixels(page, "#result-img")

    # The page shows exactly what the server answers for the fields it sent ...
    expected_first = _server_recolor(server_url, photo, first_fields)
    expected_second = _server_recolor(server_url, photo, second_fields)
    assert _changed_pixels(first_pixels, expected_first) == 0, "first result is not the server's answer"
    assert _changed_pixels(second_pixels, expected_second) == 0, "second result is not the server's answer"

    # ... and the new lip colour changed the lips the photo shows, and nothing far from them.
    changed_hw = np.abs(first_pixels.astype(int) - second_pixels.astype(int)).max(axis=-1) > 0
    lips = _lips_mask()
    assert changed_hw[lips].mean() > 0.5, f"only {changed_hw[lips].mean():.0%} of the lip pixels changed"
    far = ~_lips_mask(grow_px=6)
    assert changed_hw[far].sum() == 0, f"{changed_hw[far].sum()} pixels changed away from the lips"
    assert not page.console_errors, page.console_errors  # type: ignore[attr-defined]


def test_api_error_is_shown_in_words(page, tmp_path):
    bogus = tmp_path / "not-a-photo.jpg"
    bogus.write_text("This is a text file, not a JPEG.\n")
    with page.expect_response(lambda r: "/parse" in r.url and r.request.method == "POST") as parse_info:
        page.set_input_files("#file-input", str(bogus))
    assert parse_info.value.status >= 400
    assert _wait_state(page, "error", "ready") == "error"

    error = page.locator("#error")
    error.wait_for(state="visible")
    assert error.get_attribute("role") == "alert"
    text = error.inner_text().strip()
    assert text and any(c.isalpha() for c in text), text
    assert not text.lstrip().startswith("{"), f"raw JSON shown instead of words: {text!r}"
    _screenshot(page, "03-api-error")


def test_api_key_is_sent_when_given(page, tmp_path):
    page.fill("#api-key", "secret-test-key")
    photo = _face_png(tmp_path / "face.png")
    with page.expect_request(lambda r: "/parse" in r.url and r.method == "POST") as req_info:
        page.set_input_files("#file-input", str(photo))
    assert req_info.value.headers.get("x-api-key") == "secret-test-key"
    _wait_state(page, "ready", "error")


def test_narrow_window_has_no_horizontal_scroll(page, tmp_path):
    page.set_viewport_size({"width": 360, "height": 780})
    photo = _face_png(tmp_path / "face.png")
    page.set_input_files("#file-input", str(photo))
    _wait_state(page, "ready", "error")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    _screenshot(page, "04-narrow")
    assert overflow <= 0, f"page is {overflow}px wider than a 360px window"


def test_live_mode_sends_no_photo_recolour(page, tmp_path):
    """The controls are shared with Live mode; there they must not recolour the photo out of sight."""
    photo = _face_png(tmp_path / "face.png")
    page.set_input_files("#file-input", str(photo))
    assert _wait_state(page, "ready", "error") == "ready", page.inner_text("#error")
    recolours = "window.__sent.filter(s => s.url.endsWith('recolor')).length"
    before = page.evaluate(recolours)

    page.check("#mode-live")
    page.click('#lip-controls .swatch[data-color="#8e2453"]')
    page.evaluate("""() => {
        const intensity = document.querySelector('#lip-intensity');
        intensity.value = '0.9';
        intensity.dispatchEvent(new Event('input', { bubbles: true }));
    }""")
    page.select_option("#lip-finish", "gloss")
    page.wait_for_timeout(1000)  # well past the page's recolour debounce
    assert page.evaluate(recolours) == before, page.evaluate("window.__sent")

    # Back in Photo mode, the photo is recoloured once, with what was chosen meanwhile.
    page.check("#mode-photo")
    page.wait_for_function(f"{recolours} > {before}")
    assert _wait_state(page, "ready", "error") == "ready", page.inner_text("#error")
    fields = _last_recolor_fields(page)
    assert (fields["lip_color"], fields["lip_intensity"], fields["lip_finish"]) == ("#8e2453", "0.90", "gloss")

    # Nothing changed this time: no request at all.
    page.check("#mode-live")
    page.check("#mode-photo")
    page.wait_for_timeout(1000)
    assert page.evaluate(recolours) == before + 1, page.evaluate("window.__sent")
    assert not page.console_errors, page.console_errors  # type: ignore[attr-defined]
