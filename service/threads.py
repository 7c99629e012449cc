"""Which threads run torch, and with how many OpenMP threads each.

libgomp gives every thread that starts a parallel region a team of its own, sized
by that thread's ``torch.set_num_threads``. Once the teams hold more threads than
there are cores, libgomp stops spinning at barriers and sleeps instead, and every
forward pass gets slower: on 2 cores a batch-1 pass went from ~45 ms to ~100 ms
as soon as a second thread had run a two-threaded operator. So only the model
workers (:class:`service.inference.ModelWorkers`) run torch with more than one
thread; everything else that may touch torch off the event loop (loading,
post-processing, recolouring) goes through :func:`run_in_worker`, single-threaded.
A thread's first parallel operator otherwise takes whatever count was set last,
by any thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from starlette.concurrency import run_in_threadpool

T = TypeVar("T")
# torch's own default (OMP_NUM_THREADS, else the cores), read before any thread changes it
DEFAULT_THREADS = torch.get_num_threads()


def with_threads(threads: int, fn: Callable[..., T], *args) -> T:
    """``fn(*args)`` with the calling thread's torch intra-op threads set to ``threads``."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return fn(*args)


async def run_in_worker(fn: Callable[..., T], *args) -> T:
    """``run_in_threadpool`` for work beside the model: torch, if it is used there, runs on one thread."""
    return await run_in_threadpool(with_threads, 1, fn, *args)
