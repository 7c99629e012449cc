"""docker-compose.yml brought up for real: the service and Prometheus, which must scrape it.

Images are the ones this run built (the service from the Dockerfile, Prometheus from Debian's package
through ``PROMETHEUS_IMAGE``); Grafana's image cannot be had without the public registry, so it is
left out here and its files keep their schema checks (tests/test_deploy_files.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from benchmarks.servers import free_port
from tests.docker import engine
from tests.docker.conftest import RUN_TAG

pytestmark = pytest.mark.slow

SERVICES = ("face-parser", "prometheus")


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        return ["docker", "compose"]
    pytest.skip("no compose tool (bash scripts/install_container_tools.sh installs Debian's docker-compose)")


@pytest.fixture
def stack(service_image, prometheus_image) -> Iterator[str]:
    """The compose project up (Prometheus' base URL); always taken down with its volumes."""
    compose = [*compose_command(), "--project-directory", str(engine.ROOT),
               "-f", str(engine.ROOT / "docker-compose.yml"), "-p", f"face-parser-{RUN_TAG}"]
    prometheus_port = free_port()
    env = {
        "FACEPARSE_IMAGE_TAG": service_image.tag.split(":", 1)[1],
        "PROMETHEUS_IMAGE": prometheus_image.tag,
        # Loopback only, on free ports: the file publishes "${FACEPARSE_PORT:-8000}:8000".
        "FACEPARSE_PORT": f"127.0.0.1:{free_port()}",
        "PROMETHEUS_PORT": f"127.0.0.1:{prometheus_port}",
    }

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run([*compose, *args], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **env}, cwd=engine.ROOT)
        assert done.returncode == 0, f"compose {' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        return done

    try:
        run("up", "--detach", "--no-build", *SERVICES)
        yield f"http://127.0.0.1:{prometheus_port}"
    finally:
        logs = subprocess.run([*compose, "logs", "--tail", "40"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, **env}, cwd=engine.ROOT)
        print(logs.stdout[-4000:])
        run("down", "--volumes", "--timeout", "40")


def test_compose_brings_up_the_service_and_prometheus_scrapes_it(stack):
    deadline = time.monotonic() + 180
    target: dict = {}
    while time.monotonic() < deadline:
        try:
            targets = httpx.get(f"{stack}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            target = next(t for t in targets if t["labels"]["job"] == "face-parser")
            if target["health"] == "up":
                break
        except (httpx.HTTPError, StopIteration, KeyError, ValueError):
            pass
        time.sleep(2)
    assert target.get("health") == "up", f"face-parser target not up within 180 s: {target}"
    assert target["labels"]["instance"] == "face-parser:8000", "scraped by its compose service name"

    def query(promql: str) -> list[dict]:
        return httpx.get(f"{stack}/api/v1/query", params={"query": promql}, timeout=10).json()["data"]["result"]

    assert [s["value"][1] for s in query('up{job="face-parser"}')] == ["1"]
    (model,) = query("faceparse_model_info")
    assert model["metric"]["device"] == "cpu" and model["value"][1] == "1"
    rules = httpx.get(f"{stack}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert {r["name"] for g in rules for r in g["rules"]} >= {"FaceParserModelNotReady", "FaceParserOverloaded"}, \
        "the alert rules are mounted next to prometheus.yml"
