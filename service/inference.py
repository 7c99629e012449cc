"""The model behind the batcher: resize per request, one forward pass per batch.

Requests are resized to the model's input before they are queued (outside the
batched section); the batch function only stacks, normalises and runs the
model, and hands back each image's low-resolution class scores. Post-processing
to the photo's size happens back in the request, in a worker thread.

Forward passes run on :class:`ModelWorkers`, a few threads of their own. On the
CPU there is one per core (up to 4) and each batch takes the cores that no other
batch is using: alone, a batch spreads over all of them (lowest latency); under
load, each batch runs single-threaded beside the others. This small model
parallelises poorly inside one pass: on 2 cores two single-threaded batches of 8
made 28-29 img/s where one two-threaded batch made 21-28, and a single-threaded
pass does not stall when decoding or encoding takes a core for a moment, where
a two-threaded one waits for its slower half at every operator. On a GPU one
worker feeds the device.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch

from face_parser.detectors import BlazeFaceDetector, FaceDetector, HaarFaceDetector
from face_parser.modeling import FaceParser
from face_parser.pipeline import FacePipeline
from face_parser.preprocess import resize_rgb
from service.batcher import Batcher, BatchObserver
from service.errors import ClientClosedRequest, InvalidParameter
from service.settings import Settings
from service.threads import DEFAULT_THREADS, run_in_worker, with_threads


class FaceFindingOff:
    """``FACEPARSE_FACE_DETECTOR=none``: ``faces=whole`` parses as ever, ``faces=auto`` is refused naming the
    setting. For a machine that has neither detector's runtime (no BlazeFace weights, an OpenCV without Haar
    cascades), where the service would otherwise never become ready."""

    def __call__(self, image_hwc: np.ndarray) -> list:
        raise InvalidParameter("faces=auto: this service finds no faces (FACEPARSE_FACE_DETECTOR=none); "
                               "send faces=whole")


def make_detector(settings: Settings) -> FaceDetector:
    if settings.face_detector == "none":
        return FaceFindingOff()
    if settings.face_detector == "haar":
        return HaarFaceDetector(min_face=settings.face_min_size, max_side=settings.face_detect_max_side,
                                profile=settings.face_profile)
    return BlazeFaceDetector(min_score=settings.face_min_score)


T = TypeVar("T")
MAX_AUTO_CPU_WORKERS = 4  # beyond this, batches get too small to be worth a worker each


def worker_count(settings: Settings, device: torch.device, threads: int) -> int:
    """``inference_workers``, or auto: one on a GPU, one per core (at most 4) on the CPU."""
    if settings.inference_workers:
        return settings.inference_workers
    return 1 if device.type != "cpu" else max(1, min(threads, MAX_AUTO_CPU_WORKERS))


class ModelWorkers:
    """The threads that run forward passes; each batch gets ``threads // batches running`` intra-op threads.

    ``torch.set_num_threads`` sets the calling thread's OpenMP team size, so the
    workers can differ; the count is fixed when a batch starts. The batcher gives
    work to the lowest idle worker, so on a machine with as many workers as cores
    only worker 0 ever runs alone, and only it keeps an OpenMP team of more than
    one thread (see :mod:`service.threads`).
    """

    def __init__(self, workers: int, threads: int):
        self.threads = threads
        self.executors = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"faceparse-model-{i}")
                          for i in range(workers)]
        self._lock = threading.Lock()
        self._busy = 0

    def call(self, fn: Callable[..., T], *args) -> T:
        """Run ``fn`` in the calling worker thread with its share of the cores."""
        with self._lock:
            self._busy += 1
            share = max(1, self.threads // self._busy)
        try:
            return with_threads(share, fn, *args)
        finally:
            with self._lock:
                self._busy -= 1

    async def warm_up(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on worker 0 alone (all threads), then on every worker at once, as under load."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executors[0], self.call, fn)
        share = max(1, self.threads // len(self.executors))
        await asyncio.gather(*(loop.run_in_executor(ex, with_threads, share, fn) for ex in self.executors))

    def shutdown(self) -> None:
        for executor in self.executors:
            executor.shutdown(wait=False)


class InferenceEngine:
    """Owns the parser, its batcher and the face pipeline; ``await engine.scores(images)`` gives ``(K, h, w)`` each."""

    def __init__(self, parser: FaceParser, settings: Settings, observer: BatchObserver | None = None,
                 detector: FaceDetector | None = None):
        self.parser = parser
        self.flip = settings.flip
        self.tta_sizes = tuple(settings.tta_sizes)
        # photos (whole, or face crops) are queued at the largest size a pass reads; the others are resized from it
        self.input_size = parser.input_sizes(self.tta_sizes)[-1]
        self.pipeline = FacePipeline(detector or make_detector(settings), self.input_size, parser.labels,
                                     settings.max_faces, settings.face_align)
        threads = settings.torch_threads or DEFAULT_THREADS
        self.workers = ModelWorkers(worker_count(settings, parser.device, threads), threads)
        self.batcher: Batcher[np.ndarray, torch.Tensor] = Batcher(
            lambda images: self.workers.call(self._predict, images), settings.max_batch_size,
            settings.max_batch_delay_ms / 1000.0, settings.max_queue_size, settings.request_timeout_s, observer,
            self.workers.executors,
        )

    def _predict(self, images_shw3: list[np.ndarray]) -> list[torch.Tensor]:
        return self.parser.score_images(images_shw3, self.flip, self.tta_sizes)

    async def warm_up(self) -> None:
        """A forward pass at the largest batch on each worker, and a face search: the first requests pay no set-up."""
        size = self.input_size
        blank = np.zeros((size, size, 3), dtype=np.uint8)
        await self.workers.warm_up(lambda: self._predict([blank] * self.batcher.max_batch_size))
        if not isinstance(self.pipeline.detector, FaceFindingOff):
            await run_in_worker(self.pipeline.detector, blank)

    async def scores(self, images_hwc: list[np.ndarray]) -> list[torch.Tensor]:
        """Scores for several images of one request, queued together (see ``Batcher.submit_many``)."""
        size = self.input_size
        resized = await run_in_worker(lambda: [resize_rgb(im, size) for im in images_hwc])
        return await self.batcher.submit_many(resized)

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        self.workers.shutdown()


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
