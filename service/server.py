"""Run the app under uvicorn: in this process, or in ``FACEPARSE_PROCESSES`` processes on one port.

The app (and torch with it) is imported inside the functions that serve: the supervisor of several
processes imports this module too and serves nothing: 49 MB resident, where torch loaded made it 416 MB.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from functools import partial

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from service.connections import ConnectionGuard, bounded_ws_protocol, guarded_protocol
from service.processes import MULTIPROC_ENV, MetricsDirectory, reuse_port_socket, supervise
from service.settings import Settings, get_settings


def serve(settings: Settings, host: str, port: int, sock: socket.socket | None = None) -> None:
    """The app under uvicorn, with the service's connection limits; on ``sock`` when given."""
    from service.app import create_app

    app = create_app(settings)
    guard = ConnectionGuard(settings, on_reject=app.state.metrics.rejected)
    config = uvicorn.Config(app, host=host, port=port, log_level=settings.log_level, access_log=False,
                            timeout_graceful_shutdown=30, http=guarded_protocol(guard),
                            ws=bounded_ws_protocol(settings), timeout_keep_alive=settings.keep_alive_timeout_s,
                            ws_max_size=settings.max_upload_bytes)
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C before uvicorn takes over the signals
        server.run(sockets=None if sock is None else [sock])
    if not server.started:  # the port was taken, say: fail as uvicorn.run does, not with 0
        raise SystemExit(STARTUP_FAILURE)


def serve_process(host: str, port: int, index: int, count: int) -> None:
    """One of ``count`` service processes (spawned by :func:`service.processes.supervise`, which has made it
    follow the supervisor)."""
    from service.threads import DEFAULT_THREADS

    settings = get_settings()
    # the cores are shared out: each process's forward passes get their part, not all of them
    settings = settings.model_copy(update={"torch_threads": settings.torch_threads or max(1, DEFAULT_THREADS // count)})
    configure_logging(settings)
    logging.getLogger("service").info("process %d of %d: %d torch threads", index, count, settings.torch_threads)
    serve(settings, host, port, reuse_port_socket(host, port))


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")


def run(settings: Settings, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT, in one process or under :func:`service.processes.supervise`."""
    configure_logging(settings)
    if settings.processes == 1:
        # PROMETHEUS_MULTIPROC_DIR set for one process still puts prometheus_client in multiprocess mode: the
        # folder must exist and hold no earlier run's files, which it would add in
        with MetricsDirectory() if os.environ.get(MULTIPROC_ENV) else contextlib.nullcontext():
            serve(settings, host, port)
    else:
        supervise(settings.processes, host, port, partial(serve_process, host, port))
