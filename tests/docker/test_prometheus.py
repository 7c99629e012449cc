"""A real Prometheus (Debian's package) scrapes real services with the repository's configuration.

Two targets in the ``face-parser`` job: a service from the checkout with a tiny queue (so a burst gets
503s) and one whose model fails to load. After traffic and a few scrapes, every PromQL expression of the
Grafana dashboard must return data through the HTTP API, the overload alert must fire for the first
target and the model-not-ready alert for the second. The alert rules' timing is checked by
``promtool test rules`` (their ``for`` holds are shortened here, their expressions are not).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from benchmarks.servers import free_port, running, service_spec
from tests.conftest import draw_face, png_bytes
from tests.docker.engine import ROOT
from tests.live_server import live_server
from tests.test_deploy_files import DASHBOARD, PROMETHEUS_YML, dashboard_exprs

pytestmark = pytest.mark.slow

ALERTS = ROOT / "docker" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "docker" / "prometheus" / "alerts.test.yml"
SCRAPE_S = 1
# Grafana's $__rate_interval for this scrape interval, widened to cover the whole test's traffic.
RATE_WINDOW = "2m"
BURST = 24  # concurrent uploads against an admission limit of 3
ROUNDS = 3  # of traffic, a scrape apart: every counter grows between two samples, so rates are not 0


def prometheus_tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} not installed (Debian package prometheus: bash scripts/install_test_tools.sh)")
    return found


def test_promtool_unit_tests_of_the_alert_rules():
    run = subprocess.run([prometheus_tool("promtool"), "test", "rules", str(ALERTS_TEST)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_latency_alert_threshold_is_the_request_timeout():
    from service.metrics import LATENCY_BUCKETS
    from service.settings import Settings

    rule = next(r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]
                if r["alert"] == "FaceParserLatencyOverTimeout")
    threshold = float(re.search(r">=\s*([\d.]+)\s*$", rule["expr"].strip()).group(1))
    timeout_s = Settings.model_fields["request_timeout_s"].default
    assert threshold == timeout_s == max(LATENCY_BUCKETS), "p99 can only reach the top bucket's bound"


def prometheus_config(tmp_path: Path, targets: list[str], port: int) -> Path:
    """The repository's prometheus.yml, its face-parser job pointed at ``targets``, scraping every second."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"].update(scrape_interval=f"{SCRAPE_S}s", scrape_timeout=f"{SCRAPE_S}s",
                            evaluation_interval=f"{SCRAPE_S}s")
    for job in config["scrape_configs"]:
        job["scrape_interval"] = f"{SCRAPE_S}s"
        if job["job_name"] == "face-parser":
            job["static_configs"][0]["targets"] = targets
        if job["job_name"] == "prometheus":
            job["static_configs"][0]["targets"] = [f"127.0.0.1:{port}"]
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    (tmp_path / config["rule_files"][0]).write_text(yaml.safe_dump(rules))
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def prometheus(config: Path, port: int, log_path: Path) -> Iterator[str]:
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([prometheus_tool("prometheus"), f"--config.file={config}",
                                 f"--storage.tsdb.path={config.parent / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    def ready() -> bool:
        assert proc.poll() is None, f"Prometheus exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}"
        return httpx.get(f"{base}/-/ready", timeout=2).status_code == 200

    try:
        wait_for(ready, 60, "Prometheus ready", log_path)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def wait_for(check, timeout_s: float, what: str, log_path: Path | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            result = check()
            if result:
                return result
        time.sleep(0.5)
    log = log_path.read_text(errors="replace")[-3000:] if log_path else ""
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s\n{log}")


def query(base: str, promql: str) -> list[dict]:
    answer = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert answer["status"] == "success", f"{promql}: {answer}"
    return answer["data"]["result"]


async def traffic(base: str) -> None:
    """Parses that succeed, one bad upload (400), and a burst past the admission limit (503s)."""
    photo = png_bytes(draw_face(384, seed=5)[0])  # large enough that the burst overlaps
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        assert (await client.post("/parse", params={"faces": "whole"}, files={"image": photo})).status_code == 200
        assert (await client.post("/recolor", data={"lip_color": "#b0204a", "faces": "whole"},
                                  files={"image": photo})).status_code == 200
        assert (await client.post("/parse", files={"image": b"not an image"})).status_code == 400
        burst = await asyncio.gather(*(client.post("/parse", params={"faces": "whole"}, files={"image": photo})
                                       for _ in range(BURST)))
    codes = [r.status_code for r in burst]
    assert set(codes) == {200, 503}, f"the burst should be partly refused: {codes}"


def test_prometheus_scrapes_the_service_and_evaluates_the_dashboard(tiny_model_dir, tmp_path):
    with contextlib.ExitStack() as stack:
        # admission limit 3 (queue 1 + batch 2); a lone photo waits 0.5 s for a second one, so the burst is in
        # before the first answer however fast this machine parses (one client: the limit, not its share)
        ok_base, ok_port = stack.enter_context(live_server(
            tiny_model_dir, tmp_path / "ok.log", max_queue_size=1, max_faces=1, max_batch_size=2,
            max_batch_delay_ms=500, inference_workers=1, client_share=1))
        broken = service_spec(str(tmp_path / "no-model"))
        broken.ready_path = "/healthz"  # it stays up, /readyz says why: what the alert is for
        broken.env["HF_HUB_OFFLINE"] = "1"  # a missing folder is not looked up on the hub
        bad_port = stack.enter_context(running(broken, tmp_path / "bad.log", 60)).port
        ok, bad = f"127.0.0.1:{ok_port}", f"127.0.0.1:{bad_port}"
        port = free_port()
        base = stack.enter_context(prometheus(prometheus_config(tmp_path, [ok, bad], port), port,
                                              tmp_path / "prometheus.log"))

        wait_for(lambda: len(query(base, 'up{job="face-parser"}')) == 2, 30, "both targets scraped")
        for _ in range(ROUNDS):
            asyncio.run(traffic(ok_base))
            time.sleep(2 * SCRAPE_S)

        targets = httpx.get(f"{base}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        health = {t["labels"]["instance"]: t["health"] for t in targets if t["labels"]["job"] == "face-parser"}
        assert health == {ok: "up", bad: "up"}, targets

        dashboard = json.loads(DASHBOARD.read_text())
        grafana = {"$__rate_interval": RATE_WINDOW, "$__interval": f"{SCRAPE_S}s", "$instance": ok}
        empty = {}
        for where, expr in dashboard_exprs(dashboard):
            promql = expr
            for var, value in grafana.items():
                promql = promql.replace(var, value)
            values = [float(s["value"][1]) for s in query(base, promql)]
            if not any(math.isfinite(v) for v in values):
                empty[where + ": " + expr] = values
        assert not empty, f"dashboard queries without data: {json.dumps(empty, indent=1)}"

        def firing() -> set[tuple[str, str]]:
            alerts = httpx.get(f"{base}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
            return {(a["labels"]["alertname"], a["labels"]["instance"]) for a in alerts if a["state"] == "firing"}

        wait_for(lambda: {("FaceParserOverloaded", ok), ("FaceParserModelNotReady", bad)} <= firing(), 30,
                 "the overload and model-not-ready alerts firing")
        fired = firing()
        assert ("FaceParserModelNotReady", ok) not in fired
        assert not {a for a in fired if a[0] in ("FaceParserServerErrors", "FaceParserLatencyOverTimeout")}, fired
