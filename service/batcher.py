"""Dynamic batching: many concurrent requests, one forward pass.

Small, model-free pieces that tests drive with a plain queue:

- :func:`collect_batch` takes up to ``max_size`` items, waiting at most
  ``max_delay_s`` after the first one;
- :class:`Batcher` owns the bounded queue and a dispatch loop that hands each
  batch to an idle worker, an executor that runs the batch function in its
  thread (the event loop keeps serving health checks and metrics), and gives
  each caller its own result. An exception fails only that batch's callers; the
  loop goes on. Callers that gave up (timeout, disconnect) are dropped before
  the forward pass.

With several workers a batch waits ``max_delay_s`` for more requests only when
no other worker is idle: an idle one means spare cores, so the batch starts at
once (no added latency at low load); with every other worker busy, the cores
are taken anyway and waiting makes a fuller batch. The lowest-numbered idle
worker takes each batch, so at low load the same thread (and its warm OpenMP
team) runs every pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P")
R = TypeVar("R")
log = logging.getLogger("service.batcher")


class QueueFullError(Exception):
    """The queue holds ``max_queue_size`` requests already."""


class QueueTimeoutError(Exception):
    """The request waited longer than its timeout."""


class ShuttingDownError(Exception):
    """The service stopped before this request ran: another replica can take it (not a timeout)."""


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


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


async def collect_batch(queue: asyncio.Queue, max_size: int, max_delay_s: float | Callable[[], float]) -> list:
    """Wait for one item, then gather more until ``max_size`` or ``max_delay_s`` has passed.

    ``max_delay_s`` may be a function, asked when the first item has arrived.
    """
    batch = [await queue.get()]
    delay_s = max_delay_s() if callable(max_delay_s) else max_delay_s
    deadline = asyncio.get_running_loop().time() + delay_s
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
        except TimeoutError:
            break
    return batch


class Batcher(Generic[P, R]):
    """Bounded queue + ``workers`` dispatch loops around ``predict(list[P]) -> list[R]`` (run in threads)."""

    def __init__(
        self, predict: Callable[[list[P]], list[R]], max_batch_size: int, max_delay_s: float,
        max_queue_size: int, timeout_s: float, observer: BatchObserver | None = None,
        executors: Sequence[Executor | None] = (None,),
    ):
        self.predict, self.max_batch_size, self.max_delay_s = predict, max_batch_size, max_delay_s
        self.executors = list(executors)  # one per worker; None: asyncio's default thread pool
        self.timeout_s = timeout_s
        self.observer = observer or BatchObserver()
        self.queue: asyncio.Queue[_Item[P]] = asyncio.Queue(maxsize=max_queue_size)
        self._task: asyncio.Task | None = None
        self._idle = set(range(len(self.executors)))  # workers without a batch
        self._freed = asyncio.Event()
        self._batches: set[asyncio.Task] = set()
        self.batches_run = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Finish what is queued and in flight (bounded in time), then stop the loop.

        ``queue.join()`` also waits for the batches being collected or run: an empty
        queue alone would cancel the last batches and leave their callers hanging.
        """
        if self._task:
            try:
                await asyncio.wait_for(self.queue.join(), drain_timeout_s)
            except TimeoutError:
                pass
            tasks = [self._task, *self._batches]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(ShuttingDownError("the service shut down before this request ran"))

    async def submit(self, payload: P) -> R:
        """Queue one request and wait for its result.

        Raises QueueFullError, QueueTimeoutError or ShuttingDownError.
        """
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
        for payload, future in zip(payloads, futures, strict=True):
            self.queue.put_nowait(_Item(payload, future))
        self.observer.queue_depth(self.queue.qsize())
        gathered = asyncio.gather(*futures)
        gathered.add_done_callback(_retrieve)  # a caller that went away leaves a cancelled gather nobody awaits
        try:
            return list(await asyncio.wait_for(asyncio.shield(gathered), self.timeout_s))
        except TimeoutError:
            self.observer.rejected("timeout")
            raise QueueTimeoutError(f"no result within {self.timeout_s:g} s") from None
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()  # timed out or the caller went away: skip it in the batch

    async def _loop(self) -> None:
        while True:
            while not self._idle:
                self._freed.clear()
                await self._freed.wait()
            batch = await collect_batch(self.queue, self.max_batch_size, self._delay_s)
            worker = min(self._idle)
            self._idle.remove(worker)
            task = asyncio.get_running_loop().create_task(self._dispatch(batch, worker))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    def _delay_s(self) -> float:
        """How long a new batch waits for more: not at all while another worker is idle (see the module docstring)."""
        return 0.0 if len(self._idle) > 1 else self.max_delay_s

    async def _dispatch(self, batch: list[_Item[P]], worker: int) -> None:
        try:
            self.observer.queue_depth(self.queue.qsize())
            live = [item for item in batch if not item.future.done()]
            if live:
                await self._run(live, self.executors[worker])
        finally:  # also when stop() cancels this batch: its callers get an answer, join() its count
            self._idle.add(worker)
            self._freed.set()
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(ShuttingDownError("the service shut down before this request ran"))
                self.queue.task_done()

    async def _run(self, items: list[_Item[P]], executor: Executor | None) -> None:
        now = time.perf_counter()
        self.observer.batch_started(len(items), [now - it.enqueued_at for it in items])
        start = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                executor, self.predict, [it.payload for it in items])
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
        for it, result in zip(items, results, strict=True):
            if not it.future.done():
                it.future.set_result(result)
