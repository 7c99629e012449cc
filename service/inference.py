"""The model behind the batcher: resize per request, one forward pass per batch.

Requests are resized to the model's input before they are queued (outside the
batched section); the batch function only stacks, normalises and runs the
model, and hands back each image's low-resolution class scores. Post-processing
to the photo's size happens back in the request, in a worker thread.
"""

from __future__ import annotations

import asyncio

import numpy as np
import torch
from starlette.concurrency import run_in_threadpool

from face_parser.faces import FaceDetector, HaarFaceDetector
from face_parser.modeling import FaceParser
from face_parser.preprocess import resize_rgb, to_pixel_values
from service.batcher import Batcher, BatchObserver
from service.errors import ClientClosedRequest
from service.settings import Settings


def make_detector(settings: Settings) -> HaarFaceDetector:
    return HaarFaceDetector(min_face=settings.face_min_size, max_side=settings.face_detect_max_side,
                            profile=settings.face_profile)


class InferenceEngine:
    """Owns the parser, its batcher and the face detector; ``await engine.scores(images)`` gives ``(K, h, w)`` each."""

    def __init__(self, parser: FaceParser, settings: Settings, observer: BatchObserver | None = None,
                 detector: FaceDetector | None = None):
        self.parser = parser
        self.detector = detector or make_detector(settings)
        self.batcher: Batcher[np.ndarray, torch.Tensor] = Batcher(
            self._predict, settings.max_batch_size, settings.max_batch_delay_ms / 1000.0,
            settings.max_queue_size, settings.request_timeout_s, observer,
        )

    def _predict(self, images_shw3: list[np.ndarray]) -> list[torch.Tensor]:
        pixel_values = to_pixel_values(images_shw3, self.parser.preprocess)
        return list(self.parser.scores(pixel_values))

    def warm_up(self) -> None:
        """One forward pass at the largest batch so the first request pays no lazy set-up."""
        size = self.parser.preprocess.size
        blank = np.zeros((size, size, 3), dtype=np.uint8)
        self._predict([blank] * self.batcher.max_batch_size)
        self.detector(blank)

    async def scores(self, images_hwc: list[np.ndarray]) -> list[torch.Tensor]:
        """Scores for several images of one request, queued together (see ``Batcher.submit_many``)."""
        size = self.parser.preprocess.size
        resized = await run_in_threadpool(lambda: [resize_rgb(im, size) for im in images_hwc])
        return await self.batcher.submit_many(resized)

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()


async def wait_unless_disconnected(request, coro, poll_s: float = 0.05):
    """Await ``coro`` but cancel it (freeing its batch slot) if the client disconnects."""
    task = asyncio.ensure_future(coro)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise ClientClosedRequest("the client disconnected while its request was queued")
    finally:
        if not task.done():
            task.cancel()
