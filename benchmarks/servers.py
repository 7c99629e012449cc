"""The servers the load benchmark compares, each started as a real process on a loopback port.

- ``ours``: ``python -m service`` (the dynamic batcher), settings through ``FACEPARSE_*``;
- ``plain``: :mod:`benchmarks.baselines.plain_fastapi`, the model run once per request;
- ``litserve``: :mod:`benchmarks.baselines.litserve_app`, LitServe's own batching.

All three load the same model folder and answer ``POST /parse`` with the same class-id PNG.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("ours", "plain", "litserve")


@dataclass
class Server:
    """A started server: where it answers, its process id (for memory and thread counts) and its log."""

    base_url: str
    pid: int
    log_path: Path

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])


@dataclass
class ServerSpec:
    """How to start one server: its command (``{port}`` filled in), extra environment, readiness path."""

    name: str
    args: list[str]
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)
    batch_log: Path | None = None  # litserve: one line per forward pass with its batch size

    @property
    def processes(self) -> int:
        """The service's ``FACEPARSE_PROCESSES``: each must be ready before the server counts as ready."""
        return int(self.env.get("FACEPARSE_PROCESSES", 1))


def server_spec(name: str, model_dir: str, max_batch_size: int, max_batch_delay_ms: float, log_dir: Path,
                service_env: dict[str, str] | None = None, litserve_batch_timeout_ms: float = 5.0) -> ServerSpec:
    """The command for ``name`` (one of :data:`SERVERS`) with the same model and batch size.

    LitServe gets its own batch timeout: with 0 its worker polls its queue without blocking, a busy
    loop that would take a core from the model.
    """
    if name == "ours":
        spec = service_spec(model_dir, max_batch_size=max_batch_size, max_batch_delay_ms=max_batch_delay_ms,
                            log_level="warning")
        spec.env.update(service_env or {})
        return spec
    if name == "plain":
        return ServerSpec(name, ["-m", "benchmarks.baselines.plain_fastapi", "--model", model_dir,
                                 "--port", "{port}"], "/readyz")
    if name == "litserve":
        batch_log = log_dir / "litserve_batches.txt"
        return ServerSpec(name, ["-m", "benchmarks.baselines.litserve_app", "--model", model_dir, "--port", "{port}",
                                 "--max-batch-size", str(max_batch_size),
                                 "--batch-timeout-ms", str(litserve_batch_timeout_ms), "--batch-log", str(batch_log)],
                          "/health", batch_log=batch_log)
    raise ValueError(f"unknown server {name!r}; choose from {', '.join(SERVERS)}")


def service_spec(model_dir: str, **settings) -> ServerSpec:
    """``python -m service`` with ``settings`` as ``FACEPARSE_*`` values (names without the prefix)."""
    env = {f"FACEPARSE_{k.upper()}": str(v) for k, v in settings.items()}
    env["FACEPARSE_MODEL_DIR"] = str(model_dir)
    return ServerSpec("ours", ["-m", "service", "--host", "127.0.0.1", "--port", "{port}"], "/readyz", env)


def ready_processes(metrics_text: str) -> float:
    """The service's ``faceparse_ready`` gauge (summed over its processes) in Prometheus text; 0 when absent."""
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "faceparse_ready":
            return sum(sample.value for sample in family.samples)
    return 0.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(spec: ServerSpec, log_path: Path, ready_timeout_s: float = 180.0) -> Iterator[Server]:
    """Yield the server once ``spec.ready_path`` answers 200; the process group is stopped afterwards.

    The caller's own ``FACEPARSE_*`` variables are dropped, so that what runs is what the spec says.
    The server runs in a session of its own so that LitServe's worker processes stop with it.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEPARSE_")}
    env.update(spec.env, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, *(a.replace("{port}", str(port)) for a in spec.args)]
    base = f"http://127.0.0.1:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    previous = _exit_on_sigterm()
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{spec.name} exited with code {proc.returncode} before it was ready; "
                                   f"its log ({log_path}):\n{log_tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                # each request on a new connection: under several processes, /readyz answers once one is
                # ready, and the others must be too before connections that keep alive are made
                if (httpx.get(base + spec.ready_path, timeout=2).status_code == 200
                        and (spec.processes == 1 or ready_processes(httpx.get(base + "/metrics", timeout=2).text)
                             >= spec.processes)):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{spec.name} not ready within {ready_timeout_s:.0f} s; "
                                   f"its log ({log_path}):\n{log_tail(log_path)}")
            time.sleep(0.25)
        yield Server(base, proc.pid, log_path)
    finally:
        _stop(proc)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm():
    """SIGTERM raises SystemExit, so that ``finally`` stops the server: it runs in a session of its own,
    which a ``timeout`` or a CI runner's group kill does not reach, and Python runs no ``finally`` on a
    signal's default action. The previous handler, or None off the main thread (where none can be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def log_tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "<no log>"
