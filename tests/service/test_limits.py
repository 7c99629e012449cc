"""The bookkeeping under the slow-client defences: shared bounds, mod_reqtimeout's pace, raw answers."""

from __future__ import annotations

import json
import math

import pytest

from service.limits import Pace, Refusal, SharedBound, raw_http_response


def test_one_client_cannot_take_more_than_its_share_and_the_rest_stays_for_others():
    bound = SharedBound("uploads", "uploads in progress", total=8, share=0.25)
    assert bound.per_client == 2
    assert bound.acquire("a") is None and bound.acquire("a") is None
    over = bound.acquire("a")
    assert over is not None and (over.status, over.code, over.reason) == (429, "too_many_requests", "uploads_share")
    assert "holds 2 uploads in progress" in over.detail
    for client in "bbccd":
        assert bound.acquire(client) is None
    assert bound.held == 7 and bound.acquire("e") is None
    full = bound.acquire("f")
    assert full is not None and (full.status, full.code, full.reason) == (503, "overloaded", "uploads")
    bound.release("a")
    assert bound.acquire("a") is None  # a released slot is the client's again
    for client in "aabbccde":
        bound.release(client)
    assert bound.held == 0 and not bound.by_client


@pytest.mark.parametrize(("total", "share", "per_client"), [(3, 0.25, 1), (10, 1.0, 10), (72, 0.25, 18)])
def test_every_client_gets_at_least_one_slot(total, share, per_client):
    assert SharedBound("x", "x", total, share).per_client == per_client


def test_the_deadline_moves_one_second_per_min_rate_bytes_up_to_the_maximum():
    head = Pace(timeout_s=20, min_rate=500, max_s=40)
    assert head.deadline(100.0, 0) == 120.0
    assert head.deadline(100.0, 2500) == 125.0
    assert head.deadline(100.0, 10**9) == 140.0
    body = Pace(timeout_s=20, min_rate=500)
    assert body.deadline(0.0, 10**6) == 2020.0 and body.max_s == math.inf
    assert Pace(timeout_s=5, min_rate=0).deadline(0.0, 10**6) == 5.0  # no rate: a fixed deadline


def test_a_refusal_is_the_service_json_error_with_its_headers():
    slow = Refusal(408, "request_timeout", "too slow", reason="slow_headers", retry_after_s=None, close=True)
    raw = raw_http_response(slow.response())
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 408 Request Timeout"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["connection"] == "close" and "retry-after" not in headers
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body) == {"error": "request_timeout", "detail": "too slow"}
    busy = Refusal(429, "too_many_requests", "share", reason="uploads_share")
    assert busy.headers() == {"Retry-After": "1"}
