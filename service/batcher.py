"""Dynamic batching: many concurrent requests, one forward pass.

Small, model-free pieces that tests drive with a plain queue:

- :func:`collect_batch` takes up to ``max_size`` items, waiting at most
  ``max_delay_s`` after the first one;
- :class:`Batcher` owns the bounded queue and a dispatch loop that runs the
  batch function in a worker thread (the event loop keeps serving health checks
  and metrics) and hands each caller its own result. An exception fails only
  that batch's callers; the loop goes on. Callers that gave up (timeout,
  disconnect) are dropped before the forward pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

P = TypeVar("P")
R = TypeVar("R")
log = logging.getLogger("service.batcher")


class QueueFullError(Exception):
    """The queue holds ``max_queue_size`` requests already."""


class QueueTimeoutError(Exception):
    """The request waited longer than its timeout."""


@dataclass
class _Item(Generic[P]):
    payload: P
    future: asyncio.Future
    enqueued_at: float = field(default_factory=time.perf_counter)


class BatchObserver:
    """Hooks for metrics; the default does nothing."""

    def queue_depth(self, depth: int) -> None: ...
    def batch_started(self, size: int, queue_waits_s: Sequence[float]) -> None: ...
    def batch_finished(self, size: int, inference_s: float, ok: bool) -> None: ...
    def rejected(self, reason: str) -> None: ...


async def collect_batch(queue: asyncio.Queue, max_size: int, max_delay_s: float) -> list:
    """Wait for one item, then gather more until ``max_size`` or ``max_delay_s`` has passed."""
    batch = [await queue.get()]
    deadline = asyncio.get_running_loop().time() + max_delay_s
    while len(batch) < max_size:
        try:
            batch.append(queue.get_nowait())
            continue
        except asyncio.QueueEmpty:
            pass
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            break
        try:
            batch.append(await asyncio.wait_for(queue.get(), remaining))
        except asyncio.TimeoutError:
            break
    return batch


class Batcher(Generic[P, R]):
    """Bounded queue + dispatch loop around ``predict(list[P]) -> list[R]`` (run in a thread)."""

    def __init__(
        self, predict: Callable[[list[P]], list[R]], max_batch_size: int, max_delay_s: float,
        max_queue_size: int, timeout_s: float, observer: BatchObserver | None = None,
    ):
        self.predict, self.max_batch_size, self.max_delay_s = predict, max_batch_size, max_delay_s
        self.timeout_s = timeout_s
        self.observer = observer or BatchObserver()
        self.queue: asyncio.Queue[_Item[P]] = asyncio.Queue(maxsize=max_queue_size)
        self._task: asyncio.Task | None = None
        self.batches_run = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Finish what is queued and in flight (bounded in time), then stop the loop.

        ``queue.join()`` also waits for the batch being collected or run: an empty
        queue alone would cancel that last batch and leave its callers hanging.
        """
        if self._task:
            try:
                await asyncio.wait_for(self.queue.join(), drain_timeout_s)
            except asyncio.TimeoutError:
                pass
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(QueueTimeoutError("the service shut down before this request ran"))

    async def submit(self, payload: P) -> R:
        """Queue one request and wait for its result (or raise QueueFullError / QueueTimeoutError)."""
        return (await self.submit_many([payload]))[0]

    async def submit_many(self, payloads: Sequence[P]) -> list[R]:
        """Queue several items of one request together, all or none, and wait for all their results.

        They enter the queue back to back, so they share a forward pass when they
        fit in ``max_batch_size`` (a group photo's faces go through the model
        together). One timeout covers them all; a failed batch fails the request.
        """
        free = self.queue.maxsize - self.queue.qsize()
        if self.queue.maxsize > 0 and len(payloads) > free:
            self.observer.rejected("queue_full")
            raise QueueFullError(f"{self.queue.maxsize - free} requests are already waiting "
                                 f"(queue size {self.queue.maxsize}, this request needs {len(payloads)} places)")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in payloads]
        for payload, future in zip(payloads, futures):
            self.queue.put_nowait(_Item(payload, future))
        self.observer.queue_depth(self.queue.qsize())
        try:
            return list(await asyncio.wait_for(asyncio.shield(asyncio.gather(*futures)), self.timeout_s))
        except asyncio.TimeoutError:
            self.observer.rejected("timeout")
            raise QueueTimeoutError(f"no result within {self.timeout_s:g} s") from None
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()  # timed out or the caller went away: skip it in the batch

    async def _loop(self) -> None:
        while True:
            batch = await collect_batch(self.queue, self.max_batch_size, self.max_delay_s)
            try:
                self.observer.queue_depth(self.queue.qsize())
                live = [item for item in batch if not item.future.done()]
                if live:
                    await self._run(live)
            finally:  # also when stop() cancels this batch: its callers get an answer, join() its count
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(QueueTimeoutError("the service shut down before this request ran"))
                    self.queue.task_done()

    async def _run(self, items: list[_Item[P]]) -> None:
        now = time.perf_counter()
        self.observer.batch_started(len(items), [now - it.enqueued_at for it in items])
        start = time.perf_counter()
        try:
            results = await asyncio.to_thread(self.predict, [it.payload for it in items])
            if len(results) != len(items):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} inputs")
        except Exception as exc:  # one bad batch must not stop the loop
            log.exception("batch of %d failed", len(items))
            self.observer.batch_finished(len(items), time.perf_counter() - start, ok=False)
            for it in items:
                if not it.future.done():
                    it.future.set_exception(exc)
            return
        self.batches_run += 1
        self.observer.batch_finished(len(items), time.perf_counter() - start, ok=True)
        for it, result in zip(items, results):
            if not it.future.done():
                it.future.set_result(result)
