"""Baseline: a plain FastAPI handler that runs the model once per request (no batching).

    python -m benchmarks.baselines.plain_fastapi --model models/face-parser --port 8001

The handler is a sync ``def``, so FastAPI runs it in its thread pool and concurrent requests run
concurrent batch-1 forward passes: the usual way a model is put behind FastAPI.
"""

from __future__ import annotations

import argparse
from contextlib import asynccontextmanager
from typing import Annotated

import uvicorn
from fastapi import FastAPI, File, HTTPException, UploadFile
from fastapi.responses import Response

from benchmarks.baselines import decode, encode, forward, warm_up
from face_parser.modeling import FaceParser


def create_app(model_dir: str) -> FastAPI:
    state: dict[str, FaceParser] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["parser"] = FaceParser.load(model_dir)
        warm_up(state["parser"], 1)
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/readyz")
    def readyz() -> dict:
        if "parser" not in state:
            raise HTTPException(503, "loading")
        return {"status": "ready"}

    @app.post("/parse")
    def parse(image: Annotated[UploadFile, File()]) -> Response:
        parser = state["parser"]
        photo = decode(image.file.read())
        scores = forward(parser, [photo])[0]
        return Response(encode(parser, scores, photo), media_type="image/png")

    return app


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/face-parser")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    args = ap.parse_args(argv)
    uvicorn.run(create_app(args.model), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
