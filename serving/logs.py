"""One log format for servelm and uvicorn (time, level, logger, message), the same in every worker,
and one access line per request: method, path, status, duration, and tokens on LLM routes.

``log_config`` is what uvicorn applies in each worker it starts (so ``--workers N`` logs alike);
``RequestLog`` is the ASGI middleware that writes access lines and counts requests for /metrics.
Routes report token usage through ``note_usage``; the middleware reads it when the response ends.
"""

from __future__ import annotations

import contextvars
import logging
import logging.config
import time
from typing import Any, Optional

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import ServerMetrics
from .request_context import end_request, start_request
from .tracing import end_request_span, start_request_span, tracer

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
access_log = logging.getLogger("servelm.access")
_UNTRACED = {"/health", "/ping", "/version", "/metrics"}  # probes and scrapes: no trace each
_usage: contextvars.ContextVar[Optional[dict[str, Any]]] = contextvars.ContextVar("servelm_usage", default=None)


def log_config(level: str = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict: one stderr handler and format for servelm, uvicorn and the
    rest; uvicorn's own access log off (``servelm.access`` replaces it)."""
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"servelm": {"format": FORMAT}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "servelm", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
        "loggers": {
            "servelm": {"level": upper, "handlers": ["stderr"], "propagate": False},
            "uvicorn": {"level": upper, "handlers": ["stderr"], "propagate": False},
            "uvicorn.error": {"level": upper, "handlers": ["stderr"], "propagate": False},
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        },
    }


def configure_logging(level: str = "info") -> None:
    """Apply ``log_config(level)`` in this process."""
    logging.config.dictConfig(log_config(level))


def note_usage(prompt_tokens: int, completion_tokens: int) -> None:
    """Record the current request's token counts for its access line (no-op outside a request)."""
    usage = _usage.get()
    if usage is not None:
        usage["prompt"] = usage.get("prompt", 0) + prompt_tokens
        usage["completion"] = usage.get("completion", 0) + completion_tokens


def note_model(name: str, operation: str = "chat") -> None:
    """Record the model the current request went to, and what it asked of it (a GenAI operation name: chat,
    text_completion, invoke_agent), for its access line and its trace."""
    usage = _usage.get()
    if usage is not None:
        usage["model"], usage["operation"] = name, operation


def note_error(message: str) -> None:
    """Record why the current request failed, for its access line."""
    usage = _usage.get()
    if usage is not None:
        usage["error"] = message


class RequestLog:
    """ASGI middleware: counts responses by route and status, times them, and writes the access line
    (streaming-safe, unlike BaseHTTPMiddleware: the line is written when the body ends)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, routes: set[str], expose_errors: bool = False):
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.expose_errors = expose_errors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, root = scope.get("path", ""), scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]  # the app mounted under a prefix (a Ray Serve route_prefix, uvicorn --root-path)
        route = path if path in self.routes else ("/v1/models/{id}" if path.startswith("/v1/models/") else "other")
        status = {"code": 500}
        start = time.perf_counter()
        usage: dict[str, Any] = {}
        token = _usage.set(usage)
        client_id = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-request-id"), None)
        rid, context = start_request(client_id, self.expose_errors)
        header = (b"x-request-id", rid.encode())
        traced = tracer() is not None and route != "other" and route not in _UNTRACED
        if traced:
            span, span_token = start_request_span(scope.get("headers", ()), scope.get("method", "-"), route, rid)

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            if traced:
                end_request_span(span, span_token, status["code"], usage)
            _usage.reset(token)
            end_request(context)
            elapsed = time.perf_counter() - start  # seconds
            self.metrics.requests.labels(route=route, status=str(status["code"])).inc()
            if route.startswith("/v1/") or route == "/invocations":
                self.metrics.e2e.observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                _write_access_line(scope, status["code"], elapsed, usage, rid)


def _write_access_line(scope: Scope, status: int, elapsed: float, usage: dict[str, Any], rid: str) -> None:
    client = scope.get("client")
    parts = [
        f"{client[0]}:{client[1]}" if client else "-",
        scope.get("method", "-"),
        scope.get("path", ""),
        str(status),
        f"{elapsed * 1000:.1f}ms",
    ]
    if "prompt" in usage:
        parts.append(f"tokens={usage['prompt']}+{usage.get('completion', 0)}")
    if "model" in usage:
        parts.append(f"model={usage['model']}")
    if "error" in usage:
        parts.append(f"error={usage['error']!r}")
    parts.append(f"id={rid}")
    level = (
        logging.WARNING if status in (500, 504) else logging.INFO
    )  # a server fault or a timeout; 503 is a state (loading), not news
    access_log.log(level, " ".join(parts))
