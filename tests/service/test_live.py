"""WS /recolor/live through the ASGI app: the protocol, errors, limits and close codes, dropping, shared batches."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from service.imaging import OUTPUT_MAX_SIDE
from service.live import Frame, LatestFrame
from service.routes.live import SETTINGS_MAX_CHARS
from tests.conftest import OracleParser, draw_face, metric, parser_like, png_bytes

WHOLE = {"lip_color": "#2050e0", "lip_intensity": 1.0, "faces": "whole"}


@pytest.fixture(autouse=True)
def _let_the_handler_finish(monkeypatch):
    """Starlette's WebSocket test session sends the client's close and cancels the app's task in the
    same breath; a live handler still winding its three tasks down then surfaces that cancellation
    as ``CancelledError`` from ``__exit__``. A real server lets the handler finish: so does this."""
    from starlette.testclient import WebSocketTestSession

    original_exit = WebSocketTestSession.__exit__

    def exit_after_close(self, *args):
        with contextlib.suppress(Exception):
            self.close(1000)
        time.sleep(0.05)
        return original_exit(self, *args)

    monkeypatch.setattr(WebSocketTestSession, "__exit__", exit_after_close)


def jpeg(image: np.ndarray) -> bytes:
    return png_bytes(image, "JPEG", quality=95)


def decode(body: bytes) -> tuple[np.ndarray, str]:
    im = Image.open(io.BytesIO(body))
    return np.asarray(im.convert("RGB")), im.info.get("comment", b"").decode()


def receive_until(ws, kind: str) -> dict | bytes:
    """The next message of ``kind`` ("frame" or a JSON "type"), skipping stats reports."""
    while True:
        message = ws.receive()
        if message.get("bytes") is not None:
            if kind == "frame":
                return message["bytes"]
            raise AssertionError(f"a frame came while waiting for {kind!r}")
        if message.get("text") is None:
            raise AssertionError(f"stream ended: {message}")
        body = json.loads(message["text"])
        if body["type"] == kind:
            return body
        if body["type"] != "stats":
            raise AssertionError(f"waiting for {kind!r}, got {body}")


def closed_with(ws, code: int) -> str:
    """The close reason, once the stream closed with ``code`` (stats and frames before it are skipped)."""
    for _ in range(50):
        message = ws.receive()
        if message["type"] == "websocket.close":
            assert message["code"] == code, message
            return message.get("reason", "")
    raise AssertionError("the stream did not close")


@pytest.fixture(scope="module")
def api(make_module_client, oracle_parser):
    return make_module_client(parser=oracle_parser, live_stats_every_s=0.2)


def test_frames_come_back_recoloured_in_order(api):
    img, truth = draw_face(160, seed=4)
    lips = cv2.erode(((truth == 11) | (truth == 12)).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    with api.websocket_connect("/recolor/live") as ws:
        ws.send_text(json.dumps(WHOLE))
        ack = receive_until(ws, "settings")
        assert ack["settings"]["lip_color"] == "#2050e0" and "api_key" not in ack["settings"]
        for index in range(3):
            ws.send_bytes(jpeg(img))
            out, comment = decode(receive_until(ws, "frame"))
            assert out.shape == img.shape and comment == f"frame={index}"
            assert out[lips][:, 2].mean() > img[lips][:, 2].mean() + 60  # the lips turned blue
        stats = receive_until(ws, "stats")
        assert set(stats) == {"type", "fps", "latency_ms", "dropped"}


def test_settings_can_change_mid_stream(api):
    img, truth = draw_face(160, seed=4)
    lips = (truth == 12)
    with api.websocket_connect("/recolor/live") as ws:
        ws.send_text(json.dumps(WHOLE))
        receive_until(ws, "settings")
        ws.send_bytes(jpeg(img))
        blue, _ = decode(receive_until(ws, "frame"))
        ws.send_text(json.dumps({**WHOLE, "lip_color": "#20d040"}))
        receive_until(ws, "settings")
        ws.send_bytes(jpeg(img))
        green, _ = decode(receive_until(ws, "frame"))
        assert green[lips][:, 1].mean() > blue[lips][:, 1].mean() + 40


@pytest.mark.parametrize("settings,where", [
    ({"lip_color": "red"}, "lip_color"),
    ({"lip_color": "#ff0000", "lip_finish": "sparkle"}, "lip_finish"),
    ({"lip_color": "#ff0000", "lip_intensity": 3}, "lip_intensity"), ({"lip_color": "#ff0000", "zoom": 2}, "zoom"),
])
def test_bad_settings_get_an_error_and_the_stream_goes_on(api, settings, where):
    img = draw_face(96, seed=2)[0]
    with api.websocket_connect("/recolor/live") as ws:
        ws.send_text(json.dumps(settings))
        error = receive_until(ws, "error")
        assert error["error"] == "invalid_parameter" and where in error["detail"]
        ws.send_text("not json")
        assert receive_until(ws, "error")["error"] == "invalid_parameter"
        ws.send_text(json.dumps(WHOLE))
        receive_until(ws, "settings")
        ws.send_bytes(jpeg(img))
        assert decode(receive_until(ws, "frame"))[0].shape == img.shape


def test_bad_frames_get_an_error_and_the_stream_goes_on(api):
    img = draw_face(96, seed=2)[0]
    with api.websocket_connect("/recolor/live") as ws:
        ws.send_bytes(jpeg(img))  # before the settings
        assert "settings" in receive_until(ws, "error")["detail"]
        ws.send_text(json.dumps(WHOLE))
        receive_until(ws, "settings")
        ws.send_bytes(b"\xff\xd8 not a jpeg at all")
        error = receive_until(ws, "error")
        assert error["error"] == "invalid_image" and error["detail"].startswith("frame 1:")
        ws.send_bytes(png_bytes(img, "GIF"))
        assert receive_until(ws, "error")["error"] == "unsupported_media_type"
        ws.send_bytes(jpeg(img))
        assert decode(receive_until(ws, "frame"))[1] == "frame=3"


def test_oversized_frames_close_with_1009(make_client, oracle_parser):
    client = make_client(parser=oracle_parser, live_max_frame_bytes=4096, live_max_frame_pixels=100 * 100)
    with client.websocket_connect("/recolor/live") as ws:
        ws.send_text(json.dumps(WHOLE))
        receive_until(ws, "settings")
        ws.send_bytes(b"\x00" * 5000)
        assert "limit is 4096" in closed_with(ws, 1009)
    with client.websocket_connect("/recolor/live") as ws:
        ws.send_text(json.dumps(WHOLE))
        receive_until(ws, "settings")
        ws.send_bytes(jpeg(np.zeros((120, 120, 3), np.uint8)))
        assert "pixels" in closed_with(ws, 1009)


def test_a_frame_too_wide_for_a_jpeg_answer_closes_with_1009(api):
    with api.websocket_connect("/recolor/live") as ws:
        ws.send_text(json.dumps(WHOLE))
        receive_until(ws, "settings")
        wide = np.zeros((2, OUTPUT_MAX_SIDE["jpeg"] + 1, 3), np.uint8)
        ws.send_bytes(png_bytes(wide))  # PNG: decodable, not answerable
        assert f"at most {OUTPUT_MAX_SIDE['jpeg']}" in closed_with(ws, 1009)


def test_a_settings_message_past_the_cap_closes_with_1009(api):
    with api.websocket_connect("/recolor/live") as ws:
        ws.send_text(json.dumps({**WHOLE, "api_key": "k" * SETTINGS_MAX_CHARS}))
        assert f"limit is {SETTINGS_MAX_CHARS}" in closed_with(ws, 1009)


def test_a_deeply_nested_settings_message_is_refused_like_any_bad_one(make_client, oracle_parser):
    client = make_client(parser=oracle_parser, api_key="s3cret")
    nested = "[" * 5000 + "]" * 5000  # past json's recursion limit, within the length cap
    with client.websocket_connect("/recolor/live") as ws:
        ws.send_text(nested)
        assert "API key" in closed_with(ws, 1008)
    with client.websocket_connect("/recolor/live", headers={"X-API-Key": "s3cret"}) as ws:
        ws.send_text(nested)
        assert receive_until(ws, "error")["error"] == "invalid_parameter"
    assert metric(client.get("/metrics").text, "faceparse_live_closed_total", code="1008") == 1


def test_api_key_in_a_header_or_the_settings_message(make_client, oracle_parser):
    client = make_client(parser=oracle_parser, api_key="s3cret")
    with client.websocket_connect("/recolor/live") as ws:
        ws.send_text(json.dumps(WHOLE))
        assert "API key" in closed_with(ws, 1008)
    with client.websocket_connect("/recolor/live") as ws:
        ws.send_bytes(jpeg(draw_face(64)[0]))
        closed_with(ws, 1008)
    with client.websocket_connect("/recolor/live") as ws:
        ws.send_text(json.dumps({**WHOLE, "api_key": "wrong"}))
        closed_with(ws, 1008)
    with client.websocket_connect("/recolor/live") as ws:
        ws.send_text(json.dumps({**WHOLE, "api_key": "s3cret"}))
        assert receive_until(ws, "settings")
    with client.websocket_connect("/recolor/live", headers={"Authorization": "Bearer s3cret"}) as ws:
        ws.send_text(json.dumps(WHOLE))
        assert receive_until(ws, "settings")


def test_too_many_streams_close_with_1013_and_idle_ones_with_1008(make_client, oracle_parser):
    client = make_client(parser=oracle_parser, live_max_streams=1, live_idle_timeout_s=0.5)
    with client.websocket_connect("/recolor/live") as first:
        first.send_text(json.dumps(WHOLE))
        receive_until(first, "settings")
        with client.websocket_connect("/recolor/live") as second:
            assert "live streams" in closed_with(second, 1013)
        assert "idle" in closed_with(first, 1008)
    with client.websocket_connect("/recolor/live") as again:  # the slot was given back
        again.send_text(json.dumps(WHOLE))
        assert receive_until(again, "settings")
    text = client.get("/metrics").text
    assert [metric(text, "faceparse_live_closed_total", code=c) for c in ("1013", "1008")] == [1, 1]


class SlowOracle(OracleParser):
    """The oracle, taking ``delay_s`` per forward pass and recording each batch's size."""

    delay_s = 0.3

    def scores(self, pixel_values_bchw, flip=False):
        self.sizes.append(pixel_values_bchw.shape[0])
        time.sleep(self.delay_s)
        return super().scores(pixel_values_bchw)


def test_a_fast_client_gets_the_newest_frame_and_a_dropped_count(make_client, oracle_parser):
    slow = parser_like(oracle_parser, SlowOracle, sizes=[])
    client = make_client(parser=slow, live_stats_every_s=0.3)
    img = draw_face(96, seed=2)[0]
    with client.websocket_connect("/recolor/live") as ws:
        ws.send_text(json.dumps(WHOLE))
        receive_until(ws, "settings")
        for _ in range(8):
            ws.send_bytes(jpeg(img))
        answered, dropped = [], 0
        while not answered or answered[-1] != 7:
            message = ws.receive()
            if message.get("bytes") is not None:
                answered.append(int(decode(message["bytes"])[1].removeprefix("frame=")))
        while dropped < 8 - len(answered):
            dropped = receive_until(ws, "stats")["dropped"]
    assert answered == sorted(answered) and len(answered) < 8
    assert dropped == 8 - len(answered)


def test_viewers_share_forward_passes(make_client, oracle_parser):
    slow = parser_like(oracle_parser, SlowOracle, sizes=[])
    client = make_client(parser=slow, max_batch_delay_ms=50)
    img = draw_face(96, seed=2)[0]
    with contextlib.ExitStack() as stack:
        viewers = [stack.enter_context(client.websocket_connect("/recolor/live")) for _ in range(3)]
        for ws in viewers:
            ws.send_text(json.dumps(WHOLE))
            receive_until(ws, "settings")
        warm_up = len(slow.sizes)
        for _ in range(2):
            for ws in viewers:  # the first frame's pass takes 0.3 s: the others queue meanwhile
                ws.send_bytes(jpeg(img))
            for ws in viewers:
                receive_until(ws, "frame")
    assert max(slow.sizes[warm_up:]) >= 2, slow.sizes  # frames of several viewers shared one forward pass


def test_with_both_parts_off_frames_come_back_unchanged_and_unparsed(make_client, oracle_parser):
    """A viewer who turns both colours off sees the camera as it is; turning one on recolours again."""
    counting = parser_like(oracle_parser, SlowOracle, sizes=[], delay_s=0.0)
    client = make_client(parser=counting)
    img, truth = draw_face(160, seed=4)
    lips = cv2.erode(((truth == 11) | (truth == 12)).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    with client.websocket_connect("/recolor/live") as ws:
        ws.send_text(json.dumps({"faces": "whole"}))
        assert receive_until(ws, "settings")["settings"]["lip_color"] is None
        passes = len(counting.sizes)
        ws.send_bytes(jpeg(img))
        out, comment = decode(receive_until(ws, "frame"))
        assert comment == "frame=0" and len(counting.sizes) == passes  # no forward pass
        assert out.shape == img.shape and abs(out[lips][:, 2].mean() - img[lips][:, 2].mean()) < 8  # lips not blue
        ws.send_text(json.dumps(WHOLE))
        receive_until(ws, "settings")
        ws.send_bytes(jpeg(img))
        decode(receive_until(ws, "frame"))
        assert len(counting.sizes) == passes + 1


async def test_a_frame_the_batcher_refused_starts_the_mattes_afresh(oracle_parser, make_client, monkeypatch):
    """The tracker has seen the refused frame, the smoother has not: its mattes, warped by one frame's motion
    on the next frame, would land off the face."""
    from service.batcher import QueueFullError
    from service.live import LiveOptions, LiveStream

    state = make_client(parser=oracle_parser).app.state
    engine = state.engine
    stream = LiveStream(engine, state.settings, LiveOptions(**WHOLE))
    frame = Frame(jpeg(draw_face(96, seed=2)[0]), 0, 0.0)

    async def parse_here(inputs):  # the batcher runs on the test client's own loop, not on this test's
        return engine.parser.score_images(inputs, False, ())

    async def refuse(inputs):
        raise QueueFullError("full")

    monkeypatch.setattr(engine.batcher, "submit_many", parse_here)
    await stream.process(frame)
    assert stream.smoother._state  # mattes kept for the next frame
    monkeypatch.setattr(engine.batcher, "submit_many", refuse)
    with pytest.raises(QueueFullError):
        await stream.process(frame)
    assert not stream.smoother._state


async def test_latest_frame_keeps_only_the_newest():
    box = LatestFrame()
    for index in range(3):
        box.put(Frame(b"", index, 0.0))
    assert (await box.get()).index == 2 and box.dropped == 2
    box.put(Frame(b"", 3, 0.0))
    assert (await box.get()).index == 3 and box.dropped == 2
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(box.get(), 0.05)
