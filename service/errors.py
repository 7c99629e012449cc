"""Errors a client can act on, each mapped to one HTTP status and a JSON body.

Every error the API returns is ``{"error": "<code>", "detail": "<what was wrong>"}``.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail, self.headers = detail, headers


class InvalidImage(ApiError):
    status, code = 400, "invalid_image"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class InvalidParameter(ApiError):
    status, code = 422, "invalid_parameter"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Overloaded(ApiError):
    status, code = 503, "overloaded"


class QueueTimeout(ApiError):
    status, code = 504, "timeout"


class NotReady(ApiError):
    status, code = 503, "not_ready"


class ShuttingDown(ApiError):
    status, code = 503, "shutting_down"


class InferenceFailed(ApiError):
    status, code = 500, "inference_failed"


class ClientClosedRequest(ApiError):
    """The client hung up while queued: nginx's 499 keeps it out of the 5xx counts and the error log."""

    status, code = 499, "client_closed_request"


def error_response(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


async def api_error_handler(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.detail, exc.headers)


HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed", 408: "request_timeout", 413: "payload_too_large",
                    429: "too_many_requests", 503: "overloaded"}


async def http_error_handler(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own errors (unknown path, wrong method, unreadable body) in our shape, not bare ``{"detail"}``."""
    code = HTTP_ERROR_CODES.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal_error")
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 in our shape: one readable sentence per bad field."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "form"))
        parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
    return error_response(422, "invalid_parameter", "; ".join(parts))


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Last line: a JSON 500 with the request id, never a bare traceback to the client."""
    request_id = getattr(request.state, "request_id", "-")
    # this handler answers outside RequestContextMiddleware, which adds the header to every other answer
    return error_response(500, "internal_error", f"unexpected server error (request id {request_id})",
                          {"X-Request-ID": request_id})
