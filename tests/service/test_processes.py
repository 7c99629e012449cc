"""Several service processes on one port (``FACEPARSE_PROCESSES``): ``service.processes`` and a real server.

What a real server shows: each process listens on the port itself, connections are spread over them, one
scrape reports every process's counts, a process that dies is started again, the supervisor loads no
model, SIGTERM stops them all, and a supervisor killed with SIGKILL, even while they start, leaves none.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.servers import running, service_spec
from service.processes import MetricsDirectory, check_port_free
from tests.conftest import draw_face, metric, png_bytes

PROCESSES = 2


def listeners(port: int) -> int:
    """Sockets listening on ``port`` (IPv4, any address), from ``/proc/net/tcp``."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[1].endswith(f":{port:04X}") and row.split()[3] == "0A")


def service_processes(supervisor: int) -> set[int]:
    """The supervisor's living children that run the service (not multiprocessing's resource tracker)."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, ValueError):  # not a process, or it ended meanwhile
            continue
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if int(parent) == supervisor and state != "Z" and b"resource_tracker" not in cmdline:
            found.add(int(proc.name))
    return found


def running_pid(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped by its new parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def parse_requests_by_process(metrics_dir: Path) -> dict[int, float]:
    """Each process's own count of answered ``/parse`` requests, read from its multiprocess file."""
    from prometheus_client.mmap_dict import MmapedDict

    counts = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
            _, sample, labels, _ = json.loads(key)
            if sample == "faceparse_requests_total" and labels.get("endpoint") == "/parse":
                counts[pid] = counts.get(pid, 0.0) + value
    return counts


def wait_for(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.25)


def test_a_held_port_is_named_before_any_process_starts():
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        with pytest.raises(SystemExit, match=f"127.0.0.1:{port}"):
            check_port_free("127.0.0.1", port)


def test_the_metrics_folder_is_emptied_first_and_a_temporary_one_removed(tmp_path, monkeypatch):
    given = tmp_path / "metrics"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"stale")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(given))
    with MetricsDirectory() as metrics:
        assert metrics.path == given and not list(given.glob("*.db"))
    assert given.is_dir() and os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(given)  # the user's: kept
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    with MetricsDirectory() as metrics:
        temporary = metrics.path
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(temporary)
    assert not temporary.exists() and "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_one_process_with_a_metrics_folder_set_starts_it_empty(tmp_path, monkeypatch):
    """PROMETHEUS_MULTIPROC_DIR puts prometheus_client in multiprocess mode for one process too: the folder
    must exist, and an earlier run's files would be added into this one's counts."""
    import service.server as server
    from service.settings import Settings

    folder = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    seen = []

    def serve(*args):  # what the served app would find in the folder
        seen.append(sorted(folder.glob("*")) if folder.is_dir() else None)

    monkeypatch.setattr(server, "serve", serve)
    server.run(Settings(processes=1), "127.0.0.1", 0)
    folder.mkdir(exist_ok=True)
    (folder / "counter_123.db").write_bytes(b"an earlier run's")
    server.run(Settings(processes=1), "127.0.0.1", 0)
    assert seen == [[], []]


def follow(parent_pid: int) -> subprocess.CompletedProcess:
    """``stop_with_parent(parent_pid)`` in a new interpreter, whose parent is this one."""
    code = f"from service.processes import stop_with_parent; stop_with_parent({parent_pid}); print('following')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_process_whose_supervisor_already_died_exits_at_once():
    """A supervisor that dies before its process asks for the death signal sends none: the process sees
    that its parent is no longer the supervisor that started it, and exits instead of serving on."""
    assert follow(os.getpid()).stdout.strip() == "following"  # its parent: it goes on
    gone = follow(os.getppid())  # its grandparent: as if its parent had died and left it to another
    assert gone.returncode != 0 and "following" not in gone.stdout
    assert f"supervisor (pid {os.getppid()}) ended" in gone.stderr, gone.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_processes_end_when_the_supervisor_is_killed_as_they_start(tiny_model_dir, tmp_path):
    """SIGKILL to the supervisor the moment its processes exist, while they are still importing: none of
    them may go on holding the port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEPARSE_")}
    env.update(FACEPARSE_MODEL_DIR=tiny_model_dir, FACEPARSE_DEVICE="cpu", FACEPARSE_PROCESSES=str(PROCESSES),
               FACEPARSE_LOG_LEVEL="warning", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (tmp_path / "server.log").open("wb") as log:
        supervisor = subprocess.Popen([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
                                      env=env, stdout=log, stderr=subprocess.STDOUT)
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(children) < PROCESSES and time.monotonic() < deadline and supervisor.poll() is None:
            children = service_processes(supervisor.pid)
            time.sleep(0.005)
        assert len(children) == PROCESSES, (tmp_path / "server.log").read_text()[-2000:]
        supervisor.kill()
        supervisor.wait(10)
        wait_for(lambda: not any(running_pid(pid) for pid in children), timeout_s=20)
        assert listeners(port) == 0
    finally:
        supervisor.kill()
        for pid in children:
            if running_pid(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_a_taken_port_fails_the_start(tiny_model_dir, processes):
    """Not an exit code of 0 (an orchestrator would take it for a clean stop), and the log says why."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEPARSE_")}
    env.update(FACEPARSE_MODEL_DIR=tiny_model_dir, FACEPARSE_DEVICE="cpu", FACEPARSE_PROCESSES=str(processes))
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "address already in use" in done.stderr.lower(), done.stderr[-2000:]


@pytest.mark.slow
def test_processes_share_the_port_the_counts_and_come_back(tiny_model_dir, tmp_path, monkeypatch):
    metrics_dir = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    image = png_bytes(draw_face(64, seed=3)[0])
    spec = service_spec(tiny_model_dir, device="cpu", processes=PROCESSES, max_batch_delay_ms=0, log_level="warning")
    with running(spec, tmp_path / "server.log", ready_timeout_s=90) as server:
        base, supervisor = server.base_url, server.pid
        port = int(base.rsplit(":", 1)[1])
        wait_for(lambda: listeners(port) == PROCESSES)  # each listens once its model is loaded
        for _ in range(24):  # a new connection each: the kernel spreads them over the listeners
            r = httpx.post(base + "/parse", params={"faces": "whole"}, files={"image": ("a.png", image)}, timeout=30)
            assert r.status_code == 200, r.text
        by_process = parse_requests_by_process(metrics_dir)
        assert len(by_process) == PROCESSES and min(by_process.values()) > 0, by_process
        text = httpx.get(base + "/metrics", timeout=10).text  # whichever process answers: all of them
        assert metric(text, "faceparse_requests_total", endpoint="/parse", status="200") == 24
        assert metric(text, "faceparse_batch_size_count") == 24

        assert "libtorch" not in Path(f"/proc/{supervisor}/maps").read_text()  # it serves nothing: no model
        first = service_processes(supervisor)
        assert len(first) == PROCESSES
        os.kill(min(first), signal.SIGKILL)
        wait_for(lambda: len(service_processes(supervisor) - first) == 1 and listeners(port) == PROCESSES)
        r = httpx.post(base + "/parse", params={"faces": "whole"}, files={"image": ("a.png", image)}, timeout=30)
        assert r.status_code == 200
        alive = service_processes(supervisor)
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in alive | {supervisor}), timeout_s=30)
    assert listeners(port) == 0

