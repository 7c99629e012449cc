"""service.batcher on its own: a plain asyncio queue and fake predict functions, no HTTP, no model."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.batcher import Batcher, BatchObserver, QueueFullError, QueueTimeoutError, ShuttingDownError, collect_batch


class Recorder(BatchObserver):
    """Observer that keeps every hook call."""

    def __init__(self):
        self.started, self.finished, self.rejections, self.depths = [], [], [], []

    def queue_depth(self, depth):
        self.depths.append(depth)

    def batch_started(self, size, queue_waits_s):
        self.started.append((size, list(queue_waits_s)))

    def batch_finished(self, size, inference_s, ok):
        self.finished.append((size, ok))

    def rejected(self, reason):
        self.rejections.append(reason)


class Doubler:
    """predict(list) -> [x * 2]; records each batch it was given (thread-safe)."""

    def __init__(self, delay_s: float = 0.0, fail_on=None):
        self.calls: list[list] = []
        self.delay_s, self.fail_on = delay_s, fail_on
        self._lock = threading.Lock()

    def __call__(self, items):
        with self._lock:
            self.calls.append(list(items))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"cannot predict {self.fail_on!r}")
        return [x * 2 for x in items]

    @property
    def seen(self) -> list:
        return [x for batch in self.calls for x in batch]


def make_batcher(predict, *, max_batch_size=4, max_delay_s=0.05, max_queue_size=64, timeout_s=5.0, observer=None,
                 workers=1):
    return Batcher(predict, max_batch_size, max_delay_s, max_queue_size, timeout_s, observer, [None] * workers)


# --- collect_batch -------------------------------------------------------------------------------------------

async def test_collect_batch_takes_at_most_max_size_without_waiting():
    queue = asyncio.Queue()
    for i in range(10):
        queue.put_nowait(i)
    start = time.perf_counter()
    batch = await collect_batch(queue, max_size=4, max_delay_s=2.0)
    assert batch == [0, 1, 2, 3]
    assert queue.qsize() == 6
    assert time.perf_counter() - start < 1.0  # full batch: no reason to wait for the delay


async def test_collect_batch_returns_after_max_delay_with_a_partial_batch():
    queue = asyncio.Queue()
    queue.put_nowait("a")
    start = time.perf_counter()
    batch = await collect_batch(queue, max_size=8, max_delay_s=0.15)
    elapsed = time.perf_counter() - start
    assert batch == ["a"]
    assert 0.13 <= elapsed < 1.0


async def test_collect_batch_gathers_items_arriving_within_the_delay_only():
    queue = asyncio.Queue()
    loop = asyncio.get_running_loop()
    queue.put_nowait(1)
    loop.call_later(0.03, queue.put_nowait, 2)
    loop.call_later(0.6, queue.put_nowait, 3)  # after the 0.3 s window
    batch = await collect_batch(queue, max_size=8, max_delay_s=0.3)
    assert batch == [1, 2]
    await asyncio.sleep(0.4)
    assert queue.get_nowait() == 3


async def test_collect_batch_waits_for_the_first_item():
    queue = asyncio.Queue()
    task = asyncio.create_task(collect_batch(queue, max_size=2, max_delay_s=0.0))
    await asyncio.sleep(0.05)
    assert not task.done()
    queue.put_nowait("x")
    assert await asyncio.wait_for(task, 1.0) == ["x"]


# --- Batcher -------------------------------------------------------------------------------------------------

async def test_concurrent_submits_are_batched_and_each_caller_gets_its_own_result():
    predict, observer = Doubler(), Recorder()
    batcher = make_batcher(predict, max_batch_size=4, max_delay_s=0.1, observer=observer)
    batcher.start()
    payloads = list(range(1, 11))
    random.Random(0).shuffle(payloads)
    try:
        results = await asyncio.gather(*(batcher.submit(p) for p in payloads))
    finally:
        await batcher.stop()
    assert results == [p * 2 for p in payloads]
    assert len(predict.calls) < len(payloads)
    assert all(len(batch) <= 4 for batch in predict.calls)
    assert sorted(predict.seen) == sorted(payloads)  # each payload predicted exactly once
    assert batcher.batches_run == len(predict.calls)
    assert [size for size, _ in observer.started] == [len(b) for b in predict.calls]
    assert all(ok for _, ok in observer.finished)


async def test_an_exception_fails_only_its_batch_and_the_loop_goes_on():
    predict, observer = Doubler(fail_on="boom"), Recorder()
    batcher = make_batcher(predict, max_batch_size=8, max_delay_s=0.1, observer=observer)
    batcher.start()
    try:
        first = await asyncio.gather(batcher.submit("boom"), batcher.submit("ok"), return_exceptions=True)
        later = await asyncio.gather(batcher.submit(3), batcher.submit(4))
    finally:
        await batcher.stop()
    assert predict.calls[0] == ["boom", "ok"]  # both were in the failing batch
    assert all(isinstance(r, ValueError) and "boom" in str(r) for r in first)
    assert later == [6, 8]
    assert observer.finished[0] == (2, False) and observer.finished[-1][1] is True
    assert batcher.batches_run == len(predict.calls) - 1  # only successful batches count


async def test_a_result_count_mismatch_fails_the_batch():
    calls = []

    def predict(items):
        calls.append(list(items))
        results = [x + 1 for x in items]
        return results[:-1] if len(calls) == 1 else results  # the first batch loses one result

    batcher = make_batcher(predict, max_batch_size=8, max_delay_s=0.1)
    batcher.start()
    try:
        first = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
        second = await batcher.submit(10)
    finally:
        await batcher.stop()
    assert len(calls[0]) == 2
    assert all(isinstance(r, RuntimeError) and "1 results for 2 inputs" in str(r) for r in first)
    assert second == 11


async def test_submit_beyond_max_queue_size_raises_queue_full():
    observer = Recorder()
    batcher = make_batcher(Doubler(), max_queue_size=2, observer=observer)  # not started: nothing drains
    waiting = [asyncio.create_task(batcher.submit(i)) for i in range(2)]
    await asyncio.sleep(0.01)
    with pytest.raises(QueueFullError, match="2 requests"):
        await batcher.submit(99)
    assert observer.rejections == ["queue_full"]
    assert batcher.queue.qsize() == 2
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_submit_times_out_and_its_payload_is_then_skipped():
    predict, observer = Doubler(), Recorder()
    batcher = make_batcher(predict, timeout_s=0.05, observer=observer)  # not started yet
    start = time.perf_counter()
    with pytest.raises(QueueTimeoutError, match="0.05"):
        await batcher.submit("late")
    assert time.perf_counter() - start < 1.0
    assert observer.rejections == ["timeout"]
    batcher.timeout_s = 5.0
    batcher.start()
    try:
        assert await batcher.submit("fresh") == "freshfresh"
    finally:
        await batcher.stop()
    assert predict.seen == ["fresh"]  # the timed-out request cost no inference


async def test_a_cancelled_caller_is_skipped():
    predict = Doubler()
    batcher = make_batcher(predict, max_batch_size=8, max_delay_s=0.05)
    gone = asyncio.create_task(batcher.submit("gone"))
    kept = asyncio.create_task(batcher.submit("kept"))
    await asyncio.sleep(0.01)
    assert batcher.queue.qsize() == 2
    gone.cancel()  # the client went away while queued
    await asyncio.gather(gone, return_exceptions=True)
    batcher.start()
    try:
        assert await kept == "keptkept"
    finally:
        await batcher.stop()
    assert predict.calls == [["kept"]]
    assert gone.cancelled()


async def test_stop_drains_queued_work():
    predict = Doubler(delay_s=0.05)
    batcher = make_batcher(predict, max_batch_size=1, max_delay_s=0.0)
    batcher.start()
    tasks = [asyncio.create_task(batcher.submit(i)) for i in range(4)]
    await asyncio.sleep(0.01)
    await batcher.stop(drain_timeout_s=5.0)
    assert all(t.done() for t in tasks)
    assert [t.result() for t in tasks] == [0, 2, 4, 6]  # every request ran, the last batch included
    assert batcher.batches_run == 4


async def test_stop_fails_what_cannot_be_drained_in_time():
    batcher = make_batcher(Doubler(), timeout_s=10.0)  # never started: nothing will drain the queue
    task = asyncio.create_task(batcher.submit("stuck"))
    await asyncio.sleep(0.01)
    start = time.perf_counter()
    await batcher.stop(drain_timeout_s=0.1)
    assert time.perf_counter() - start < 1.0
    with pytest.raises(ShuttingDownError, match="shut down"):
        await asyncio.wait_for(task, 1.0)


async def test_predict_runs_off_the_event_loop():
    """A slow forward pass must not block the loop (health checks keep answering)."""
    batcher = make_batcher(Doubler(delay_s=0.3), max_batch_size=1, max_delay_s=0.0)
    batcher.start()
    try:
        job = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.02)
        ticks = 0
        while not job.done():
            ticks += 1
            await asyncio.sleep(0.01)
        assert await job == 2
    finally:
        await batcher.stop()
    assert ticks >= 5


async def test_stop_answers_the_batch_in_flight_when_the_drain_times_out():
    batcher = make_batcher(Doubler(delay_s=0.6), max_batch_size=1, max_delay_s=0.0, timeout_s=10.0)
    batcher.start()
    task = asyncio.create_task(batcher.submit("slow"))
    await asyncio.sleep(0.05)  # now inside predict
    start = time.perf_counter()
    await batcher.stop(drain_timeout_s=0.05)
    with pytest.raises(ShuttingDownError, match="shut down"):
        await asyncio.wait_for(task, 0.3)  # answered at once, not after the 10 s request timeout
    assert time.perf_counter() - start < 0.5


# --- several workers -----------------------------------------------------------------------------------------

class Overlap(Doubler):
    """A slow Doubler that also records how many of its calls ran at once."""

    def __init__(self, delay_s: float):
        super().__init__(delay_s)
        self.now = self.most = 0

    def __call__(self, items):
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            return super().__call__(items)
        finally:
            with self._lock:
                self.now -= 1


async def test_two_workers_run_two_batches_at_once():
    predict = Overlap(delay_s=0.2)
    batcher = make_batcher(predict, max_batch_size=2, max_delay_s=0.0, workers=2)
    batcher.start()
    try:
        results = await asyncio.gather(*(batcher.submit(p) for p in range(8)))
    finally:
        await batcher.stop()
    assert results == [p * 2 for p in range(8)]
    assert predict.most == 2
    assert sorted(predict.seen) == list(range(8))


async def test_a_request_does_not_wait_for_more_while_another_worker_is_idle():
    """At low load the batch delay is skipped: the idle peer means there are spare cores."""
    batcher = make_batcher(Doubler(), max_batch_size=4, max_delay_s=2.0, workers=2)
    batcher.start()
    try:
        start = time.perf_counter()
        assert await batcher.submit(5) == 10
        assert time.perf_counter() - start < 1.0
    finally:
        await batcher.stop()


async def test_with_every_other_worker_busy_a_batch_waits_to_fill():
    predict = Overlap(delay_s=0.4)
    batcher = make_batcher(predict, max_batch_size=3, max_delay_s=0.2, workers=2)
    batcher.start()
    try:
        first = asyncio.create_task(batcher.submit("a"))  # the other worker idle: runs alone, at once
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(batcher.submit(x)) for x in "bc"]
        await asyncio.sleep(0.02)
        rest.append(asyncio.create_task(batcher.submit("d")))  # arrives within the second worker's wait
        await asyncio.gather(first, *rest)
    finally:
        await batcher.stop()
    assert predict.calls == [["a"], ["b", "c", "d"]]


async def test_at_low_load_every_batch_runs_on_the_first_worker():
    """One thread (and its OpenMP team) serves one request at a time, rather than the workers taking turns."""
    executors = [ThreadPoolExecutor(1, thread_name_prefix=f"worker-{i}") for i in range(2)]
    names: list[str] = []
    batcher = Batcher(lambda items: names.append(threading.current_thread().name) or items, 4, 0.0, 16, 5.0,
                      executors=executors)
    batcher.start()
    try:
        for x in range(5):
            assert await batcher.submit(x) == x
    finally:
        await batcher.stop()
        for executor in executors:
            executor.shutdown()
    assert len(names) == 5 and all(name.startswith("worker-0") for name in names)
