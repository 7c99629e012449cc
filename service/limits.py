"""Bounds that no single client can fill, and deadlines that follow a client's progress.

Pure bookkeeping, no I/O: the connection protocol (:mod:`service.connections`) and the admission
middleware (:mod:`service.middleware`) decide what to do with a :class:`Refusal` or a deadline.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus

from starlette.exceptions import HTTPException
from starlette.responses import Response

from service.errors import error_response


@dataclass(frozen=True)
class Refusal:
    """Why a connection or request is not taken: 429 (this client is over its share) or 503 (all full)."""

    status: int
    code: str
    detail: str
    reason: str  # the ``faceparse_rejected_total`` label: a fixed set of names
    retry_after_s: int | None = 1
    close: bool = False  # end the connection after the answer (a client too slow to keep)

    def headers(self) -> dict[str, str]:
        retry = {} if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}
        return retry | ({"Connection": "close"} if self.close else {})

    def response(self) -> Response:
        return error_response(self.status, self.code, self.detail, self.headers())

    def exception(self) -> RefusedError:
        return RefusedError(self)


class RefusedError(HTTPException):
    """A :class:`Refusal` raised from inside a request: an HTTPException, so FastAPI's body parsing re-raises it."""

    def __init__(self, refusal: Refusal):
        super().__init__(refusal.status, refusal.detail, refusal.headers())
        self.refusal = refusal


class SharedBound:
    """At most ``total`` slots of one kind held at once, and at most ``share`` of them by any one client.

    Without the share, one client with many sockets fills the bound and every other client is
    refused (measured before: 80 one-byte-a-second uploads kept ``/parse`` at 503 for everyone).
    """

    def __init__(self, name: str, noun: str, total: int, share: float):
        self.name, self.noun, self.total = name, noun, total
        self.per_client = max(1, math.floor(total * share))
        self.held = 0
        self.by_client: Counter[str] = Counter()

    def acquire(self, client: str) -> Refusal | None:
        """Take a slot for ``client``, or say why not (the client's share is checked first)."""
        mine = self.by_client[client]
        if mine >= self.per_client < self.total:  # a share of 1 means none: a full bound is a 503
            return Refusal(429, "too_many_requests", f"this client already holds {mine} {self.noun}, its share "
                           f"of the service's {self.total}; retry when one of them has finished",
                           reason=f"{self.name}_share")
        if self.held >= self.total:
            return Refusal(503, "overloaded", f"{self.held} {self.noun} at once (limit {self.total}); "
                           "retry shortly", reason=self.name)
        self.held += 1
        self.by_client[client] = mine + 1
        return None

    def release(self, client: str) -> None:
        self.held -= 1
        left = self.by_client[client] - 1
        if left > 0:
            self.by_client[client] = left
        else:
            del self.by_client[client]


@dataclass(frozen=True)
class Pace:
    """Apache mod_reqtimeout's rule: ``timeout_s`` to start, one second more per ``min_rate`` bytes received,
    never past ``max_s``. A client that keeps up ``min_rate`` bytes/s is never cut; one below it is."""

    timeout_s: float
    min_rate: float
    max_s: float = math.inf

    def deadline(self, start: float, received: int) -> float:
        credit = received / self.min_rate if self.min_rate > 0 else 0.0
        return start + min(self.timeout_s + credit, self.max_s)


def raw_http_response(response: Response) -> bytes:
    """An HTTP/1.1 answer as bytes, for the connection protocol that writes to the socket itself."""
    lines = [f"HTTP/1.1 {response.status_code} {HTTPStatus(response.status_code).phrase}".encode()]
    lines += [name + b": " + value for name, value in response.raw_headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + bytes(response.body)
