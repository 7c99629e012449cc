"""Several service processes on one port (``FACEPARSE_PROCESSES``), and the supervisor that keeps them.

One Python process serves one bytecode at a time: the HTTP layer, multipart parsing, decoding and encoding
all take turns with the code that feeds the model. On one H200 with 16 cores the service reached 0.04x of
the model's own throughput while 3 of the cores were busy (README, "The service on a GPU"). Each process
started here is the whole service (its model, batcher, limits and event loop), listening on its own socket
bound to the same port with ``SO_REUSEPORT``: the kernel spreads new connections over the processes evenly,
where one shared socket lets whichever process wakes first take a whole burst of them (and keep them, with
keep-alive). Prometheus metrics are summed over the processes through ``prometheus_client``'s multiprocess
mode (:meth:`service.metrics.Metrics.exposition`).

The supervisor restarts a process that dies, forwards SIGTERM and SIGINT as SIGTERM (uvicorn then drains
what is in flight; a second SIGINT would cut it short) and waits for them to finish. A supervisor killed
with SIGKILL takes its processes with it, on Linux (:func:`stop_with_parent`).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import multiprocess

log = logging.getLogger("service.processes")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
RESTART_DELAY_S = 1.0  # a process that keeps dying is restarted at most this often
PR_SET_PDEATHSIG = 1


def tcp_socket(host: str) -> socket.socket:
    """A TCP socket for ``host``'s address family, with ``SO_REUSEADDR`` (a restart binds despite TIME_WAIT)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with ``SO_REUSEPORT``, not yet listening (uvicorn listens once the
    app's lifespan has loaded the model, so that no connection waits on a process that is still loading)."""
    sock = tcp_socket(host)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def check_port_free(host: str, port: int) -> None:
    """Fail now, with the address, if anything holds the port: a socket without ``SO_REUSEPORT`` cannot bind
    next to any other. (With it, a forgotten earlier instance would silently share the port's traffic.)"""
    with tcp_socket(host) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


def stop_with_parent(parent_pid: int) -> None:
    """Ask Linux to send this process SIGTERM when its parent, ``parent_pid``, dies (a supervisor killed with
    SIGKILL must not leave processes holding the port), and exit now if it has died already: a death before
    the request sends nothing, and the process would serve on. Elsewhere: nothing."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # adopted by init or a subreaper
        raise SystemExit(f"the supervisor (pid {parent_pid}) ended before this process started; exiting")


def _run_process(target: tuple[str, str, tuple, dict], supervisor_pid: int, index: int, count: int) -> None:
    """A spawned service process: follow the supervisor first, then run the target, ``(module, function, args,
    keywords)``, as ``function(*args, index, count, **keywords)``. The target travels by name and is imported
    only here: its module imports uvicorn and FastAPI (half a second), and a supervisor killed meanwhile would
    go unnoticed until then."""
    stop_with_parent(supervisor_pid)
    module, name, args, keywords = target
    getattr(importlib.import_module(module), name)(*args, index, count, **keywords)


class MetricsDirectory:
    """The folder that ``prometheus_client``'s multiprocess mode keeps its per-process files in: the
    user's ``PROMETHEUS_MULTIPROC_DIR`` (emptied first, as its documentation asks), else a new temporary
    one removed afterwards. Set in the environment, so the processes inherit it."""

    def __enter__(self) -> MetricsDirectory:
        given = os.environ.get(MULTIPROC_ENV)
        self.temporary = given is None
        self.path = Path(given or tempfile.mkdtemp(prefix="faceparse-metrics-"))
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in self.path.glob("*.db"):
            stale.unlink()
        os.environ[MULTIPROC_ENV] = str(self.path)
        return self

    def __exit__(self, *exc) -> None:
        if self.temporary:
            shutil.rmtree(self.path, ignore_errors=True)
            os.environ.pop(MULTIPROC_ENV, None)

    def process_ended(self, pid: int) -> None:
        """Drop an ended process's live gauges (queue depth, open streams)."""
        multiprocess.mark_process_dead(pid, str(self.path))


def supervise(count: int, host: str, port: int, target: Callable[[int, int], None]) -> None:
    """Run ``target(index, count)`` in ``count`` spawned processes until SIGTERM or SIGINT; each is to bind
    ``host:port`` itself (:func:`reuse_port_socket`). ``target`` is a module's function or a
    ``functools.partial`` of one with plain arguments: it is sent to the new interpreter by name."""
    check_port_free(host, port)
    context = multiprocessing.get_context("spawn")  # no fork: torch and its thread pools do not survive one
    function = getattr(target, "func", target)  # a functools.partial, or a module's function
    by_name = (function.__module__, function.__qualname__, getattr(target, "args", ()), getattr(target, "keywords", {}))
    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    with MetricsDirectory() as metrics:
        def start(index: int) -> multiprocessing.process.BaseProcess:
            process = context.Process(target=_run_process, args=(by_name, os.getpid(), index, count),
                                      name=f"faceparse-{index}")
            process.start()
            return process

        processes = {index: start(index) for index in range(count)}
        log.info("%d service processes on %s:%d (metrics in %s)", count, host, port, metrics.path)
        try:
            while not stopping:
                time.sleep(0.2)
                for index, process in processes.items():
                    if process.is_alive() or stopping:
                        continue
                    log.error("service process %d (pid %s) ended with code %s; starting it again",
                              index, process.pid, process.exitcode)
                    metrics.process_ended(process.pid or 0)
                    time.sleep(RESTART_DELAY_S)
                    processes[index] = start(index)
        finally:
            _stop_all(list(processes.values()))
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _stop_all(processes: list, grace_s: float = 40.0) -> None:
    """SIGTERM to each (uvicorn drains, up to its 30 s graceful timeout), then SIGKILL to what is left."""
    for process in processes:
        if process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
