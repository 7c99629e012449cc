"""``python -m service [--host H] [--port P]``: run the API with uvicorn (``service.server``)."""

from __future__ import annotations

import argparse

from service.server import run
from service.settings import get_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Face parsing service")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    run(get_settings(), args.host, args.port)


if __name__ == "__main__":
    main()
