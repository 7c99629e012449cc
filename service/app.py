"""App factory. The lifespan loads and warms the model, then starts the batcher.

A model that fails to load leaves the app up with ``/readyz`` at 503 and the
reason, so an orchestrator sees why instead of a crash loop without logs.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from functools import partial

import anyio
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from face_parser.detectors import FaceDetector
from face_parser.modeling import FaceParser
from service.errors import (
    ApiError,
    api_error_handler,
    http_error_handler,
    unexpected_error_handler,
    validation_error_handler,
)
from service.inference import InferenceEngine
from service.memory import IdleTrimmer
from service.metrics import Metrics
from service.middleware import (
    AdmissionLimits,
    AdmissionMiddleware,
    BodyLimitMiddleware,
    RequestContextMiddleware,
    client_identity,
)
from service.routes import health, live, model_info, page, parse, recolor
from service.routes.page import STATIC_DIR
from service.settings import Settings, get_settings
from service.threads import run_in_worker

log = logging.getLogger("service")


def load_parser(settings: Settings) -> FaceParser:
    return FaceParser.load(settings.model_dir, device=settings.device, dtype=settings.dtype)


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings: Settings = app.state.settings
    # each thread that touches torch keeps its own OpenMP pool: bound them (anyio's default is 40)
    anyio.to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
    engine = None
    try:
        parser = app.state.parser or await run_in_worker(load_parser, settings)
        engine = InferenceEngine(parser, settings, app.state.metrics, app.state.detector)
        await engine.warm_up()
    except Exception as exc:  # keep serving /healthz and /readyz with the reason
        if engine is not None:
            await engine.stop()
        app.state.not_ready_reason = f"model {settings.model_dir!r} failed to load: {type(exc).__name__}: {exc}"
        log.error(app.state.not_ready_reason)
        yield
        return
    engine.start()
    dtype = str(parser.dtype).removeprefix("torch.")
    app.state.metrics.model_info.labels(parser.version, str(parser.device), dtype).set(1)
    app.state.engine = engine
    app.state.metrics.ready.set(1)
    log.info("model %s ready on %s (%s)", parser.version, parser.device, parser.dtype)
    try:
        yield
    finally:
        app.state.metrics.ready.set(0)
        app.state.engine = None
        app.state.not_ready_reason = "shutting down"
        await engine.stop()


def create_app(settings: Settings | None = None, parser: FaceParser | None = None,
               detector: FaceDetector | None = None) -> FastAPI:
    """Build the app; ``parser`` and ``detector`` let tests inject a model built in memory and a face stub."""
    settings = settings or get_settings()
    app = FastAPI(title="Face parser", version="0.1.0", lifespan=lifespan,
                  description="MaskFormer face parsing (CelebAMask-HQ classes) with lip and hair recolouring.")
    app.state.settings, app.state.parser, app.state.detector, app.state.engine = settings, parser, detector, None
    app.state.not_ready_reason = "model is loading"
    app.state.metrics = Metrics(live_close_codes=live.CLOSE_CODES)
    # Starlette types a handler as taking any Exception, not the class it is registered for: hence the ignores
    app.add_exception_handler(ApiError, api_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, http_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected_error_handler)
    app.state.live_streams = 0  # open WS /recolor/live streams
    for module in (parse, recolor, live, model_info, health, page):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    trimmer = IdleTrimmer(settings.idle_trim_s)
    app.add_middleware(AdmissionMiddleware, paths={"/parse", "/recolor"},
                       limits=AdmissionLimits.from_settings(settings),
                       identify=partial(client_identity, api_key=settings.api_key),
                       on_reject=app.state.metrics.rejected, on_busy=trimmer.busy, on_idle=trimmer.idle)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes + 64 * 1024)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    return app
