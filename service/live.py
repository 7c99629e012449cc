"""One live try-on stream: its settings, its newest waiting frame, and the frame pipeline.

A frame goes decode -> track the faces (:mod:`service.tracking`) -> crop -> the
service's one batcher (shared with ``POST /recolor`` and every other viewer, so one
forward pass serves many streams) -> paste -> mattes -> smoothing over time ->
recolour -> JPEG. Nothing here knows of WebSockets: :mod:`service.routes.live`
speaks the protocol around it.
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from face_parser.faces import Face, crop_face
from face_parser.pipeline import FaceParsing
from face_parser.preprocess import resize_rgb
from service.errors import PayloadTooLarge
from service.faces import FacesMode, part_probabilities
from service.imaging import OUTPUT_MAX_SIDE, decode_image
from service.inference import InferenceEngine
from service.recolor import ColorRequest, LipFinish, needed_parts, parse_hex_color, part_mattes, recolor_with_mattes
from service.settings import Settings
from service.threads import run_in_worker
from service.tracking import FaceTracker, MatteSmoother

JPEG_QUALITY = 85  # frames are shown once, at video rate: smaller and faster to encode than the REST answer's 92


class LiveOptions(BaseModel):
    """The settings message: the fields of ``POST /recolor`` a stream uses (and the key, for browsers)."""

    model_config = ConfigDict(extra="forbid")

    lip_color: str | None = None
    hair_color: str | None = None
    lip_intensity: float = Field(0.7, ge=0.0, le=1.0)
    hair_intensity: float = Field(0.8, ge=0.0, le=1.0)
    lip_finish: LipFinish = "natural"
    faces: FacesMode = "auto"
    api_key: str | None = Field(None, description="browsers cannot set headers on a WebSocket: the key goes here")

    @field_validator("lip_color", "hair_color")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value:
            parse_hex_color(value)
        return value or None

    def colors(self) -> tuple[ColorRequest | None, ColorRequest | None]:
        lips = self.lip_color and ColorRequest(parse_hex_color(self.lip_color), self.lip_intensity, self.lip_finish)
        hair = self.hair_color and ColorRequest(parse_hex_color(self.hair_color), self.hair_intensity)
        return lips or None, hair or None


def parse_options(text: str) -> LiveOptions:
    """A settings message -> options; ValueError with one readable sentence per bad field."""
    try:
        options = LiveOptions.model_validate_json(text)
    except ValidationError as exc:
        parts = [f"{'.'.join(str(p) for p in err['loc']) or 'message'}: {err['msg']}" for err in exc.errors()]
        raise ValueError("; ".join(parts)) from None
    return options


@dataclass
class Frame:
    """A received frame: its bytes, its index among the stream's binary messages, and when it arrived."""

    data: bytes
    index: int
    received_at: float


class LatestFrame:
    """A one-frame mailbox: a newer frame replaces a waiting one, which counts as dropped."""

    def __init__(self) -> None:
        self._frame: Frame | None = None
        self._ready = asyncio.Event()
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        if self._frame is not None:
            self.dropped += 1
        self._frame = frame
        self._ready.set()

    async def get(self) -> Frame:
        await self._ready.wait()
        self._ready.clear()
        frame, self._frame = self._frame, None
        assert frame is not None
        return frame


class LiveStream:
    """The per-viewer pipeline; frames go through :meth:`process` one at a time, in order."""

    def __init__(self, engine: InferenceEngine, settings: Settings, options: LiveOptions):
        self.engine, self.settings, self.options = engine, settings, options
        self.tracker = self._new_tracker()
        self.smoother = MatteSmoother()

    def _new_tracker(self) -> FaceTracker:
        return FaceTracker(self.engine.pipeline.detector, self.settings.max_faces, self.settings.live_detect_every)

    async def process(self, frame: Frame) -> bytes:
        """The recoloured frame as JPEG (same size), tagged with the frame's index in its comment.

        Two hops to a worker thread around the shared batcher: decode + track + crop, then
        re-frame + paste + mattes + recolour + encode. Raises the service's errors:
        InvalidImage / UnsupportedMediaType for a bad frame, PayloadTooLarge above the pixel
        limit or past a JPEG's longest side, the batcher's queue errors under overload.
        """
        if self.options.colors() == (None, None):
            return await run_in_worker(self._unchanged, frame.data, frame.index)
        photo_hwc, faces, inputs = await run_in_worker(self._prepare, frame.data)
        try:
            scores = await self.engine.batcher.submit_many(inputs) if inputs else []
        except BaseException:
            # The tracker has moved on to this frame and the mattes have not: warped by one frame's motion
            # they would land off the face, so the next frame starts them afresh.
            self.smoother.reset()
            raise
        return await run_in_worker(self._finish, photo_hwc, FaceParsing(scores, faces), frame.index)

    def _unchanged(self, data: bytes, index: int) -> bytes:
        """Neither part recoloured (the viewer turned both off): the frame as it came, with no parse. Tracking
        starts afresh when a colour is back, from frames the tracker has seen."""
        photo_hwc = decode_image(data, self.settings.live_max_frame_pixels)
        check_answerable(photo_hwc)
        self.tracker = self._new_tracker()
        self.smoother.reset()
        return encode_frame(photo_hwc, index)

    def _prepare(self, data: bytes) -> tuple[np.ndarray, list[Face] | None, list[np.ndarray]]:
        """Decode; the faces and their crops at the model's input size (``faces=whole``: the frame, resized)."""
        photo_hwc = decode_image(data, self.settings.live_max_frame_pixels)
        check_answerable(photo_hwc)
        size = self.engine.input_size
        if self.options.faces == "whole":
            self.tracker.observe(photo_hwc)  # the motion still steadies the mattes
            return photo_hwc, None, [resize_rgb(photo_hwc, size)]
        faces = self.tracker.step(photo_hwc)
        return photo_hwc, faces, [crop_face(photo_hwc, f.crop, size) for f in faces]

    def _finish(self, photo_hwc: np.ndarray, parsing: FaceParsing, index: int) -> bytes:
        if parsing.faces is not None:
            self.tracker.update(parsing.scores, self.engine.parser.labels)
        lips, hair = self.options.colors()
        probs = part_probabilities(parsing, self.engine.parser.labels, photo_hwc.shape[:2],
                                   needed_parts(lips, hair), None)
        mattes = self.smoother(part_mattes(photo_hwc, probs), self.tracker.motion)
        return encode_frame(recolor_with_mattes(photo_hwc, mattes, lips, hair), index)


def check_answerable(frame_hwc: np.ndarray) -> None:
    """PayloadTooLarge for a frame longer than a JPEG answer can be: the default pixel limit lets in 1 x 2.1 M."""
    height, width = frame_hwc.shape[:2]
    longest = OUTPUT_MAX_SIDE["jpeg"]
    if max(height, width) > longest:
        raise PayloadTooLarge(f"frame is {width}x{height}; answers are JPEG, at most {longest} px a side")


def encode_frame(image_hwc: np.ndarray, index: int) -> bytes:
    """JPEG with the comment ``frame=<index>``, so a client can pair answers with the frames it sent."""
    buf = io.BytesIO()
    Image.fromarray(image_hwc).save(buf, format="JPEG", quality=JPEG_QUALITY, comment=f"frame={index}".encode())
    return buf.getvalue()


class StreamStats:
    """Answered frames and their latency since the last report, and the dropped count so far."""

    def __init__(self) -> None:
        self._since = time.perf_counter()
        self._latencies: list[float] = []

    def answered(self, frame: Frame) -> None:
        self._latencies.append(time.perf_counter() - frame.received_at)

    def report(self, dropped: int) -> dict:
        """``{"type": "stats", "fps", "latency_ms" (median), "dropped"}``; starts the next window."""
        now = time.perf_counter()
        fps = len(self._latencies) / max(now - self._since, 1e-6)
        latency = float(np.median(self._latencies)) * 1000 if self._latencies else None
        self._since, self._latencies = now, []
        return {"type": "stats", "fps": round(fps, 2), "latency_ms": latency and round(latency, 1),
                "dropped": dropped}
