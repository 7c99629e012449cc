"""Fuzzing the upload path (Hypothesis) and the whole API from its own OpenAPI schema (Schemathesis).

Whatever comes in, the answer is a 200 or a 4xx in the API's JSON error shape, never a 5xx, and the
service keeps answering. Both are bounded so the suite stays fast on a small CPU. Every request the
fuzzers send is counted by answer class and the totals end pytest's terminal summary:

    python -m pytest tests/service/test_fuzz.py -q    # ... "fuzz: N requests ... 5xx 0"
"""

from __future__ import annotations

import io
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis.checks import not_a_server_error

from service.app import create_app
from tests.conftest import draw_face, image_bytes, make_settings, png_bytes

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)

SENT: Counter = Counter()  # (fuzzer, "2xx" | "4xx" | "5xx" | other status) -> requests


def record(fuzzer: str, status: int) -> None:
    SENT[fuzzer, f"{status // 100}xx" if status >= 200 else str(status)] += 1


class FuzzSummary:
    """A pytest plugin (registered by the module fixture below) that prints SENT after the run."""

    @staticmethod
    def pytest_terminal_summary(terminalreporter) -> None:
        if not SENT:
            return
        per_fuzzer, per_class = Counter(), Counter()
        for (fuzzer, answer), n in SENT.items():
            per_fuzzer[fuzzer] += n
            per_class[answer] += n
        terminalreporter.write_sep("-", "fuzz")
        terminalreporter.write_line(
            f"fuzz: {sum(SENT.values())} requests ("
            + ", ".join(f"{fuzzer} {n}" for fuzzer, n in per_fuzzer.items()) + "); answers "
            + ", ".join(f"{answer} {per_class[answer]}" for answer in sorted(per_class))
            + ("" if "5xx" in per_class else ", 5xx 0"))


@pytest.fixture(scope="module", autouse=True)
def fuzz_summary(request):
    if not request.config.pluginmanager.has_plugin("face-parser-fuzz-summary"):
        request.config.pluginmanager.register(FuzzSummary(), "face-parser-fuzz-summary")


@pytest.fixture(scope="module")
def api(make_module_client):
    return make_module_client(max_batch_delay_ms=0)


def seeds() -> list[bytes]:
    img = draw_face(48, seed=9)[0]
    return [png_bytes(img), png_bytes(img, "JPEG", quality=80), png_bytes(img, "WEBP"), png_bytes(img, "BMP"),
            image_bytes(Image.fromarray(img).convert("P", palette=Image.Palette.ADAPTIVE), "PNG", transparency=3)]


@st.composite
def mutated_images(draw) -> bytes:
    """A valid photo with a few bytes flipped, a slice cut out or truncated: the decoder's edge cases."""
    data = bytearray(draw(st.sampled_from(seeds())))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        start = draw(st.integers(0, len(data) - 1))
        del data[start:start + draw(st.integers(1, 64))]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def assert_ok_or_client_error(r):
    assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code != 200:
        body = r.json()
        assert set(body) == {"error", "detail"}


def assert_still_serving(client):
    r = client.post("/parse", files={"image": ("a.png", seeds()[0], "image/png")})
    assert r.status_code == 200
    assert client.get("/readyz").status_code == 200


def test_random_bytes_never_cause_a_server_error(api):
    @FUZZ
    @given(data=st.binary(max_size=4096), filename=st.text(max_size=20),
           content_type=st.sampled_from(["image/png", "image/jpeg", "application/octet-stream", "text/plain"]))
    def check(data, filename, content_type):
        r = api.post("/parse", files={"image": (filename or "x", data, content_type)})
        record("random bytes", r.status_code)
        assert_ok_or_client_error(r)

    check()
    assert_still_serving(api)


def test_mutated_images_never_cause_a_server_error(api):
    @FUZZ
    @given(data=mutated_images(), fmt=st.sampled_from(["png", "color", "rle"]))
    def check(data, fmt):
        r = api.post("/parse", params={"format": fmt}, files={"image": ("a", data, "application/octet-stream")})
        record("mutated images /parse", r.status_code)
        assert_ok_or_client_error(r)
        if r.status_code == 200 and fmt != "rle":
            with Image.open(io.BytesIO(r.content)) as im:
                im.load()

    check()
    assert_still_serving(api)


def test_mutated_images_on_recolor_never_cause_a_server_error(api):
    @settings(FUZZ, max_examples=30)
    @given(data=mutated_images(), color=st.text(max_size=8), intensity=st.floats(allow_nan=True))
    def check(data, color, intensity):
        form = {"lip_color": color, "hair_color": "#102030", "lip_intensity": str(intensity)}
        r = api.post("/recolor", data=form, files={"image": ("a", data, "image/png")})
        record("mutated images /recolor", r.status_code)
        assert_ok_or_client_error(r)

    check()
    assert_still_serving(api)


# --- Schemathesis: every operation in the app's own OpenAPI schema ---------------------------------------
# (``schemathesis.pytest.from_fixture`` breaks under pytest 9: it reads ``node._nodeid``, which is gone. So
# the schema's Hypothesis strategy drives a plain test instead.)

@pytest.fixture(scope="module")
def api_schema(tiny_model_dir):
    """The app's schema; Schemathesis calls the app in process and runs its lifespan itself."""
    from schemathesis.python import asgi

    app = create_app(make_settings(tiny_model_dir, max_batch_delay_ms=0))
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    asgi.shutdown_lifespans()


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
                         ids=["positive", "negative"])
def test_openapi_operations_never_answer_5xx(api_schema, mode):
    seen = set()

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=api_schema.as_strategy(mode), real_photo=st.booleans())
    def check(case, real_photo):
        if real_photo and isinstance(case.body, dict) and "image" in case.body:
            case.body["image"] = seeds()[0]  # reach past the decoder: parameters meet the model
            if case.path == "/recolor":
                case.body["lip_color"] = "#c81e3c"
        response = case.call()
        record(f"OpenAPI {mode.value}", response.status_code)
        seen.add((case.method.upper(), case.path, response.status_code))
        case.validate_response(response, checks=[not_a_server_error])
        if response.status_code >= 400:
            assert set(response.json()) == {"error", "detail"}, response.text

    check()
    operations = {(method, path) for method, path, _ in seen}
    assert {("POST", "/parse"), ("POST", "/recolor")} <= operations
    if mode == schemathesis.GenerationMode.POSITIVE:
        assert {("GET", "/v1/model"), ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")} <= operations
