"""A real ``python -m service`` on a free loopback port, for tests where the network matters.

Started the way the benchmarks start it (:func:`benchmarks.servers.running`); a server that
does not come up fails the test with its log.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.servers import log_tail, running, service_spec

__all__ = ["live_server", "log_tail"]


@contextlib.contextmanager
def live_server(model_dir: str, log_path: Path, ready_timeout_s: float = 90.0,
                **settings: str) -> Iterator[tuple[str, int]]:
    """Yield ``(base_url, port)`` once ``/readyz`` is 200; the process is always stopped afterwards.

    ``settings`` are ``FACEPARSE_*`` values (without the prefix); other ``FACEPARSE_*``
    variables of the test environment are dropped so they cannot leak in.
    """
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(running(service_spec(model_dir, **settings), log_path, ready_timeout_s))
        except RuntimeError as exc:  # not ready: the message carries the server's log
            pytest.fail(str(exc))
        yield server.base_url, server.port
