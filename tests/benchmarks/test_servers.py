"""benchmarks.servers: a benchmark stopped by SIGTERM (timeout, a CI runner) takes its server with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCHMARK = """
import sys, time
from pathlib import Path
from benchmarks.servers import ServerSpec, running
spec = ServerSpec("http", ["-m", "http.server", "{port}", "--bind", "127.0.0.1"], "/")
with running(spec, Path(sys.argv[1]), ready_timeout_s=30) as server:
    print(server.pid, flush=True)
    time.sleep(60)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_to_a_benchmark_stops_its_server(tmp_path):
    """The server runs in a session of its own, out of reach of the benchmark's process group."""
    bench = subprocess.Popen([sys.executable, "-c", BENCHMARK, str(tmp_path / "server.log")], cwd=REPO_ROOT,
                             stdout=subprocess.PIPE, text=True)
    server_pid = int(bench.stdout.readline())
    try:
        assert alive(server_pid)
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(timeout=30) == 128 + signal.SIGTERM
        for _ in range(100):  # the server is stopped before the benchmark exits; reaping may lag a little
            if not alive(server_pid):
                break
            time.sleep(0.1)
        assert not alive(server_pid)
    finally:
        bench.kill()
        if alive(server_pid):
            os.killpg(server_pid, signal.SIGKILL)
