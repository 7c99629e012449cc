"""service.threads: work beside the model runs torch single-threaded, whatever was set last elsewhere."""

from __future__ import annotations

import threading

import torch

from service.threads import run_in_worker, with_threads


def test_with_threads_sets_the_calling_threads_count_for_the_call():
    seen = {}

    def probe():
        seen["inside"] = with_threads(1, torch.get_num_threads)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    assert seen["inside"] == 1


async def test_run_in_worker_is_single_threaded_even_after_another_thread_set_more():
    other = threading.Thread(target=torch.set_num_threads, args=(2,))  # what a model worker does when alone
    other.start()
    other.join()
    assert await run_in_worker(torch.get_num_threads) == 1
    assert await run_in_worker(lambda a, b: a + b, 2, 3) == 5
