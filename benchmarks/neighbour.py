"""A busy neighbour: processes that keep cores busy at a higher priority than the code measured.

On a shared host, or in a container over its CPU quota, a core is taken away in the middle of
a torch parallel region, and OpenMP threads that spin at barriers then spin against it
(``benchmarks/omp_wait.py``). ``benchmarks/service_load.py --neighbour`` and
``benchmarks/omp_wait.py`` measure next to one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

NEIGHBOUR_NICE = -10  # the busy neighbour's priority: above the service's, as a host's own work would be


@contextmanager
def busy_neighbour(cores: int) -> Iterator[int]:
    """``cores`` processes spinning, one core each, at :data:`NEIGHBOUR_NICE` where this user may raise a
    priority (else at the default); yields the niceness they got. The service's OpenMP threads then find a
    core taken away in the middle of a parallel region."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    nice = NEIGHBOUR_NICE
    try:
        for spinner in spinners:
            try:
                os.setpriority(os.PRIO_PROCESS, spinner.pid, NEIGHBOUR_NICE)
            except PermissionError:
                nice = 0
        time.sleep(0.5)  # running before the round starts
        yield nice
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
