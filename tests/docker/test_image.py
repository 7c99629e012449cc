"""The service image, built from the Dockerfile and run as production runs it.

Read-only root, a tmpfs on /tmp, no capabilities, the image's own non-root user, and the engine's
HEALTHCHECK; its answers must equal those of the service run from the checkout, and SIGTERM must
drain the requests in flight and end the process with 0.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from face_parser.modeling import resolve_dtype
from tests.conftest import draw_face, metric, png_bytes
from tests.docker import engine
from tests.live_server import live_server

pytestmark = pytest.mark.slow

SHIPPED_MODEL = engine.ROOT / "models" / "face-parser"
HARDENED = ("--read-only", "--tmpfs", "/tmp:size=256m,mode=1777", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges:true", "--publish", "127.0.0.1::8000")
DRAIN_TIMEOUT_S = 35  # docker-compose.yml's stop_grace_period: uvicorn's 30 s graceful shutdown + margin
IN_FLIGHT = 24  # more than the workers' batches (max_batch_size 8), so some are still queued at SIGTERM


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    from skimage import data

    return {"astronaut": png_bytes(data.astronaut()), "drawn": png_bytes(draw_face(256, seed=3)[0])}


@pytest.fixture(scope="module")
def running(service_image) -> Iterator[tuple[str, str]]:
    """(container id, base URL) once the engine reports the image's HEALTHCHECK healthy."""
    with engine.container(service_image.tag, *HARDENED) as cid:
        engine.wait_healthy(cid, timeout_s=180)
        yield cid, f"http://127.0.0.1:{engine.published_port(cid)}"


def ask(base: str, photos: dict[str, bytes]) -> dict[str, bytes]:
    """The same requests to either service: parse (png, rle) with and without face finding, and recolour."""
    out = {}
    with httpx.Client(base_url=base, timeout=120) as client:
        for name, photo in photos.items():
            faces = "auto" if name == "astronaut" else "whole"
            for fmt in ("png", "rle"):
                r = client.post("/parse", params={"format": fmt, "faces": faces}, files={"image": photo})
                assert r.status_code == 200, r.text
                out[f"parse {fmt} {name}"] = r.content
            r = client.post("/recolor", files={"image": photo},
                            data={"lip_color": "#b0204a", "hair_color": "#c0782f", "faces": faces, "format": "png"})
            assert r.status_code == 200, r.text
            out[f"recolor {name}"] = r.content
    return out


def test_runs_read_only_as_the_images_non_root_user(running):
    cid, base = running
    assert engine.inspect(cid, "{{.Config.User}}") == "10001:10001"
    whoami = engine.docker("exec", cid, "python", "-c", "import os; print(os.getuid(), os.getgid())").stdout.split()
    assert whoami == ["10001", "10001"]
    write = engine.docker("exec", cid, "python", "-c", "open('/app/x', 'w')", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    assert httpx.get(f"{base}/readyz", timeout=10).json()["status"] == "ready"


def test_answers_equal_the_checkout_service(running, photos, tmp_path):
    _, base = running
    in_container = ask(base, photos)
    with live_server(str(SHIPPED_MODEL), tmp_path / "checkout.log") as (checkout_base, _):
        from_checkout = ask(checkout_base, photos)
    for key, body in from_checkout.items():
        assert in_container[key] == body, f"{key}: the image answers differently from the checkout"
    labels = np.asarray(Image.open(io.BytesIO(in_container["parse png astronaut"])))
    assert labels.shape == (512, 512) and len(np.unique(labels)) > 5, "a real parsing, not an empty map"


def test_metrics_count_the_requests(running, photos):
    _, base = running
    ask(base, {"drawn": photos["drawn"]})
    text = httpx.get(f"{base}/metrics", timeout=10).text
    assert metric(text, "faceparse_requests_total", endpoint="/parse", status="200") >= 2
    assert metric(text, "faceparse_requests_total", endpoint="/recolor", status="200") >= 1
    assert metric(text, "faceparse_batch_size_count") >= 1
    # auto: bf16 where this host's CPU has bf16 instructions (the container runs on the same CPU), else float32
    dtype = str(resolve_dtype("auto", torch.device("cpu"))).removeprefix("torch.")
    assert metric(text, "faceparse_model_info", device="cpu", dtype=dtype) == 1


async def _in_flight_then_sigterm(base: str, cid: str, photo: bytes) -> tuple[list[int], float]:
    """IN_FLIGHT parse requests; SIGTERM once some of them are queued. Their statuses, and SIGTERM's time."""
    async with httpx.AsyncClient(base_url=base, timeout=DRAIN_TIMEOUT_S + 30) as client:
        requests = [asyncio.create_task(client.post("/parse", params={"faces": "whole"}, files={"image": photo}))
                    for _ in range(IN_FLIGHT)]
        deadline = time.monotonic() + 60
        while (metric((await client.get("/metrics")).text, "faceparse_queue_depth") or 0) < 1:
            assert time.monotonic() < deadline, "the requests never queued"
            await asyncio.sleep(0.05)
        engine.docker("kill", "--signal", "TERM", cid)
        signalled = time.monotonic()
        answers = await asyncio.gather(*requests, return_exceptions=True)
    return [a.status_code if isinstance(a, httpx.Response) else repr(a) for a in answers], signalled


def test_sigterm_drains_the_requests_in_flight(service_image, photos):
    # all the requests come from this one client: lift the per-client share so that none gets 429
    with engine.container(service_image.tag, *HARDENED, "--env", "FACEPARSE_CLIENT_SHARE=1") as cid:
        engine.wait_healthy(cid, timeout_s=180)
        base = f"http://127.0.0.1:{engine.published_port(cid)}"
        statuses, signalled = asyncio.run(_in_flight_then_sigterm(base, cid, photos["drawn"]))
        exit_code = engine.docker("wait", cid, timeout=DRAIN_TIMEOUT_S + 10).stdout.strip()
        stopped_after_s = time.monotonic() - signalled
        logs = engine.docker("logs", cid, check=False)
    assert statuses == [200] * IN_FLIGHT, statuses
    assert exit_code == "0", f"exit code {exit_code}; log:\n{logs.stdout[-2000:]}{logs.stderr[-2000:]}"
    assert stopped_after_s < DRAIN_TIMEOUT_S
    assert "Waiting for application shutdown" in logs.stderr, "uvicorn's graceful shutdown ran"


def test_image_size_and_healthcheck(service_image):
    """Size and build time go to the run's summary; the torch CPU build keeps the image under 2.5 GB."""
    assert service_image.size_bytes < 2.5e9, f"{service_image.size_bytes / 1e9:.2f} GB: a CUDA torch?"
    healthcheck = engine.docker("image", "inspect", "--format", "{{json .Config.Healthcheck.Test}}",
                                service_image.tag).stdout
    assert "/healthz" in healthcheck
