"""``python -m service [--host H] [--port P]``: run the API with uvicorn (one model process)."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from service.app import create_app
from service.connections import ConnectionGuard, bounded_ws_protocol, guarded_protocol
from service.settings import get_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Face parsing service")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app(settings)
    guard = ConnectionGuard(settings, on_reject=app.state.metrics.rejected)
    uvicorn.run(app, host=args.host, port=args.port, log_level=settings.log_level, access_log=False,
                timeout_graceful_shutdown=30, http=guarded_protocol(guard), ws=bounded_ws_protocol(settings),
                timeout_keep_alive=settings.keep_alive_timeout_s, ws_max_size=settings.max_upload_bytes)


if __name__ == "__main__":
    main()
