"""Slow and greedy clients against the real server on loopback (the benchmark's attackers, smaller numbers):
the ordinary client is served throughout, slow connections get 408 by their deadline, a greedy client 429."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from benchmarks.servers import Server, running, service_spec
from benchmarks.slow_clients import (
    attack,
    attacker_address,
    multipart_upload,
    open_fds,
    ordinary_client,
    summarize_cuts,
)
from benchmarks.soak import face_photos

pytestmark = pytest.mark.slow

DEADLINE_S = 1.0
SETTINGS = dict(device="cpu", torch_threads=1, log_level="warning", body_timeout_s=DEADLINE_S,
                header_timeout_s=DEADLINE_S, header_timeout_max_s=2 * DEADLINE_S, keep_alive_timeout_s=1,
                max_uploads=8, max_connections=64, client_share=0.25,  # a client: 2 uploads, 16 connections
                share_refusal_delay_s=0.25)


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory) -> Iterator[Server]:
    log_path = tmp_path_factory.mktemp("slow_clients") / "server.log"
    try:
        with running(service_spec(tiny_model_dir, **SETTINGS), log_path, ready_timeout_s=90) as live:
            yield live
    except RuntimeError as exc:  # not ready: the message carries the server's log
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def photo() -> bytes:
    return face_photos()["512.jpg"]


async def under_attack(kind: str, base: str, port: int, photo: bytes, connections: int = 20, seconds: float = 3.0):
    """(the ordinary client's answers, the attackers' cuts), both over the same ``seconds``."""
    upload = multipart_upload(port, photo)
    cuts, ordinary = await asyncio.gather(attack(kind, port, connections, 1, seconds, upload),
                                          ordinary_client(base, photo, seconds - 0.5))
    return ordinary, [{"answer": c.answer, "after_s": c.after_s} for c in cuts]


async def greedy_request(base: str, photo: bytes) -> httpx.Response:
    transport = httpx.AsyncHTTPTransport(local_address=attacker_address(0))
    async with httpx.AsyncClient(base_url=base, transport=transport, timeout=10) as client:
        return await client.post("/parse", params={"faces": "whole"}, files={"image": ("a.jpg", photo, "image/jpeg")})


def fds_settle(pid_fds, before: int, timeout_s: float = 5.0) -> int:
    deadline = time.monotonic() + timeout_s
    while (now := pid_fds()) > before and time.monotonic() < deadline:
        time.sleep(0.2)
    return now


async def test_slow_uploads_are_cut_with_408_and_a_greedy_client_gets_429(server, photo):
    base, port, pid = server.base_url, server.port, server.pid
    fds_before = open_fds(pid)

    async def attack_and_probe():
        attacking = asyncio.ensure_future(under_attack("slow_body", base, port, photo))
        await asyncio.sleep(0.5)  # the attacker's address holds its two uploads by now
        probe = await greedy_request(base, photo)
        return await attacking, probe

    (ordinary, cuts), probe = await attack_and_probe()
    assert [status for status, _ in ordinary] == ["200"] * len(ordinary), ordinary
    assert probe.status_code == 429 and probe.headers["retry-after"] == "1"
    assert probe.json()["error"] == "too_many_requests"
    summary = summarize_cuts(cuts, DEADLINE_S, 3.0)
    assert set(summary["answers"]) <= {"408", "429", "open at end"}, summary
    assert summary["answers"]["408"]["n"] >= 2 and summary["answers"]["429"]["n"] >= 10
    assert summary["answers"]["429"]["max_s"] < DEADLINE_S  # refused at once, not held
    assert summary["late"] == 0, summary
    assert fds_settle(lambda: open_fds(pid), fds_before) <= fds_before


async def test_slow_headers_get_408_and_idle_connections_are_closed_by_their_deadlines(server, photo):
    base, port = server.base_url, server.port
    for kind, expected in (("slow_headers", {"408", "429"}), ("idle", {"closed", "429"})):
        ordinary, cuts = await under_attack(kind, base, port, photo)
        assert [status for status, _ in ordinary] == ["200"] * len(ordinary), (kind, ordinary)
        summary = summarize_cuts(cuts, DEADLINE_S, 3.0)
        assert set(summary["answers"]) - {"open at end"} == expected, (kind, summary)
        assert summary["late"] == 0, (kind, summary)
