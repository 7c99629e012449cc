"""The face-parsing service: FastAPI app (:mod:`service.app`), started by ``python -m service``.

Importing the package sets how torch's OpenMP threads wait, because libgomp reads it once, when torch
loads it: after each parallel region a thread spins ``GOMP_SPINCOUNT`` times (libgomp: 300,000) before it
sleeps. Next to a busy neighbour (a shared host, a container over its CPU quota) a spinning thread holds
a core that the thread it waits for needs: a batch-1 forward pass took 2.1 s instead of 78 ms. With 1000
spins it took 155 ms there and 83 ms quiet (``python -m benchmarks.omp_wait``). An operator's own
``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` wins.
"""

import os

SPIN_COUNT = "1000"

if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
