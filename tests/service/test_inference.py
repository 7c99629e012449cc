"""service.inference: how many forward passes run at once, and how they share the cores."""

from __future__ import annotations

import threading

import pytest
import torch

from service.inference import ModelWorkers, worker_count
from tests.conftest import make_settings


@pytest.mark.parametrize(("device", "threads", "setting", "expected"), [
    ("cpu", 2, 0, 2), ("cpu", 16, 0, 4), ("cpu", 1, 0, 1), ("cuda", 16, 0, 1), ("cpu", 16, 3, 3), ("cuda", 4, 2, 2),
])
def test_worker_count_auto_is_one_per_core_on_cpu_and_one_on_gpu(device, threads, setting, expected):
    settings = make_settings("unused", inference_workers=setting)
    assert worker_count(settings, torch.device(device), threads) == expected


def threads_seen(workers: ModelWorkers, calls: int) -> list[int]:
    """``torch.get_num_threads()`` inside ``calls`` calls, each started while the earlier ones are still running."""
    release = threading.Event()
    seen: list[int] = []

    def probe(entered: threading.Event) -> None:
        seen.append(torch.get_num_threads())
        entered.set()
        release.wait(timeout=5)

    futures = []
    for executor in workers.executors[:calls]:
        entered = threading.Event()
        futures.append(executor.submit(workers.call, probe, entered))
        assert entered.wait(timeout=5)
    release.set()
    for f in futures:
        f.result(timeout=5)
    return seen


def test_a_lone_batch_takes_every_thread_and_later_ones_share_what_is_left():
    workers = ModelWorkers(workers=2, threads=2)
    try:
        assert threads_seen(workers, 1) == [2]
        assert threads_seen(workers, 2) == [2, 1]  # the first keeps what it started with
        assert threads_seen(workers, 1) == [2]  # all cores again once alone
    finally:
        workers.shutdown()


def test_the_share_never_drops_below_one_thread():
    workers = ModelWorkers(workers=4, threads=2)
    try:
        assert threads_seen(workers, 4) == [2, 1, 1, 1]
    finally:
        workers.shutdown()
