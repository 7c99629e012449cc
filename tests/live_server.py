"""A real ``python -m service`` on a free loopback port, for tests where the network matters."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "<no server log>"


@contextlib.contextmanager
def live_server(model_dir: str, log_path: Path, ready_timeout_s: float = 90.0,
                **settings: str) -> Iterator[tuple[str, int]]:
    """Yield ``(base_url, port)`` once ``/readyz`` is 200; the process is always stopped afterwards.

    ``settings`` are ``FACEPARSE_*`` values (without the prefix); other ``FACEPARSE_*``
    variables of the test environment are dropped so they cannot leak in.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEPARSE_")}
    env.update({f"FACEPARSE_{k.upper()}": str(v) for k, v in settings.items()})
    env.update(FACEPARSE_MODEL_DIR=str(model_dir), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with code {proc.returncode} before it was ready:\n{log_tail(log_path)}")
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready within {ready_timeout_s:.0f} s:\n{log_tail(log_path)}")
            time.sleep(0.2)
        yield base, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
