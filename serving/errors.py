"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}`` with the right status, and
the one mapping from whatever a route or a model raised to such an error."""

from __future__ import annotations

import logging
from typing import Any, Optional

from pydantic import ValidationError

from servelm.flavors import SchemaEnforcementError

from .request_context import expose_errors, request_id

log = logging.getLogger("servelm.serving")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    499: "invalid_request_error",
    500: "server_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class APIError(Exception):
    """An error to send to the client as-is: status, message, and the OpenAI error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: Optional[str] = None,
        code: Optional[str] = None,
        type: Optional[str] = None,
        headers: Optional[dict[str, str]] = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def validation_error(exc: ValidationError, prefix: str = "") -> APIError:
    """A 400 naming the first invalid field (``messages.0.role: ...``), from a pydantic error."""
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    param = f"{prefix}.{loc}" if prefix and loc else (loc or prefix or None)
    message = first.get("msg", "invalid value")
    if first.get("type") == "missing":
        message = "Field required"
    text = f"{param}: {message}" if param else message
    extra = len(exc.errors()) - 1
    if extra:
        text += f" (and {extra} more error{'s' if extra > 1 else ''})"
    return APIError(
        400, text, param=param, code="invalid_value" if first.get("type") != "missing" else "missing_required_parameter"
    )


def as_api_error(exc: BaseException, during: str = "model") -> APIError:
    """What the client is told for ``exc``: APIErrors as they are, bad input as 400, a timeout as 504,
    anything else as a 500 that names the exception's type and the request's id; its text and traceback go to
    the log (an exception's text can hold paths, keys or data), and to the client only with ``--expose-errors``."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, SchemaEnforcementError):
        return APIError(400, f"input does not match the model signature: {exc}", code="invalid_input")
    if isinstance(exc, ValidationError):
        return validation_error(exc)
    if isinstance(exc, TimeoutError):
        return APIError(504, "the model did not answer in time", code="timeout")
    if isinstance(exc, RecursionError):  # an input nested deeper than Python's stack (JSON of 10^5 brackets)
        return APIError(400, "the input nests too deeply", code="invalid_value")
    rid = request_id()
    log.error("%s error (request %s): %s: %s", during, rid, type(exc).__name__, exc, exc_info=exc)
    if expose_errors():
        return APIError(500, f"{during} error: {type(exc).__name__}: {exc}", code=f"{during}_error")
    where = f"request {rid}; " if rid else ""
    return APIError(
        500, f"{during} error: {type(exc).__name__} ({where}the server's log has the details)", code=f"{during}_error"
    )
