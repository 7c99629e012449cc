"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.deps import MetricsDep, require_api_key_for_ops

router = APIRouter(tags=["operations"], dependencies=[Depends(require_api_key_for_ops)])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="The model is loaded and warmed up (503 before, with the reason)")
async def readyz(request: Request):
    if request.app.state.engine is None:
        return JSONResponse({"status": "not_ready", "detail": request.app.state.not_ready_reason}, status_code=503)
    return {"status": "ready", "model_version": request.app.state.engine.parser.version}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(m: MetricsDep) -> Response:
    return Response(m.exposition(), media_type=CONTENT_TYPE_LATEST)
