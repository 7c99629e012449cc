"""Dependencies shared by the routes, as ``Annotated`` aliases.

The upload -> decode step and the queue -> forward step live here once, so the
route handlers stay thin and every endpoint maps errors the same way. The
dependencies that do no blocking I/O are ``async def``: FastAPI runs a plain
``def`` one in the worker thread pool, where ``/healthz`` (and every request's
key check) would queue behind the decoding and encoding of large photos.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Mapping
from typing import Annotated

import numpy as np
import torch
from fastapi import Depends, File, Request, UploadFile
from pydantic import SecretStr

from service.batcher import QueueFullError, QueueTimeoutError, ShuttingDownError
from service.errors import (
    ClientClosedRequest,
    InferenceFailed,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    QueueTimeout,
    ShuttingDown,
    Unauthorized,
)
from service.imaging import decode_image
from service.inference import InferenceEngine, wait_unless_disconnected
from service.metrics import Metrics
from service.settings import Settings
from service.threads import run_in_worker


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_engine(request: Request) -> InferenceEngine:
    engine = request.app.state.engine
    if engine is None:
        raise NotReady(request.app.state.not_ready_reason, headers={"Retry-After": "5"})
    return engine


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
EngineDep = Annotated[InferenceEngine, Depends(get_engine)]


def presented_key(headers: Mapping[str, str]) -> str:
    """The key a client sent as ``Authorization: Bearer <key>`` or ``X-API-Key`` ("" when none)."""
    auth = headers.get("authorization", "")
    return auth[7:] if auth.lower().startswith("bearer ") else headers.get("x-api-key", "")


def _key_equals(given: str, api_key: SecretStr) -> bool:
    return hmac.compare_digest(given.encode(), api_key.get_secret_value().encode())  # constant time


def api_key_matches(headers: Mapping[str, str], api_key: SecretStr) -> bool:
    """The key presented in ``headers`` equals ``api_key``."""
    return _key_equals(presented_key(headers), api_key)


def api_key_valid(given: str | None, settings: Settings) -> bool:
    """True when no key is configured or ``given`` is it."""
    return settings.api_key is None or _key_equals(given or "", settings.api_key)


async def require_api_key(request: Request, settings: SettingsDep) -> None:
    """When an API key is configured, accept ``Authorization: Bearer <key>`` or ``X-API-Key``."""
    if not api_key_valid(presented_key(request.headers), settings):
        raise Unauthorized("a valid API key is required (Authorization: Bearer <key> or X-API-Key)",
                           headers={"WWW-Authenticate": "Bearer"})


async def require_api_key_for_ops(request: Request, settings: SettingsDep) -> None:
    if settings.protect_ops_endpoints:
        await require_api_key(request, settings)


def decimal_below(token: str, bound: int) -> int | None:
    """``token`` as a number when it is written in ASCII digits and is below ``bound``, else None.

    Lengths are compared first: ``int()`` raises ValueError on more than 4300 digits.
    """
    digits = token.lstrip("0") or "0"
    if not (token.isascii() and token.isdigit()) or len(digits) > len(str(bound)):
        return None
    value = int(digits)
    return value if value < bound else None


async def read_image(
    settings: SettingsDep,
    image: Annotated[UploadFile, File(description="JPEG, PNG, WebP or BMP photo")],
) -> np.ndarray:
    """The uploaded photo as ``(H, W, 3)`` uint8 RGB, decoded in a worker thread."""
    data = await image.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(f"upload is larger than {settings.max_upload_bytes} bytes")
    return await run_in_worker(decode_image, data, settings.max_image_pixels)


PhotoDep = Annotated[np.ndarray, Depends(read_image)]


async def run_model(request: Request, engine: InferenceEngine, images_hwc: list[np.ndarray]) -> list[torch.Tensor]:
    """Queue a request's images (a photo, or its faces) for batched forward passes; errors become 503 / 504 / 500."""
    try:
        return await wait_unless_disconnected(request, engine.scores(images_hwc))
    except QueueFullError as exc:
        raise Overloaded(f"the service is at capacity ({exc}); retry shortly", headers={"Retry-After": "1"}) from None
    except QueueTimeoutError as exc:
        raise QueueTimeout(f"the request timed out in the queue: {exc}") from None
    except ShuttingDownError as exc:
        raise ShuttingDown(f"{exc}; retry (another replica takes it)", headers={"Retry-After": "1"}) from None
    except (asyncio.CancelledError, ClientClosedRequest):
        raise
    except Exception as exc:
        raise InferenceFailed(f"inference failed for this batch: {type(exc).__name__}: {exc}") from None
