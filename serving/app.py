"""``create_app``: the FastAPI app serving one model on the OpenAI and MLflow scoring endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any, Optional

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from servelm.agents import __version__

from .errors import APIError, as_api_error, validation_error
from .http import error_response
from .logs import RequestLog
from .openapi import openapi_document
from .options import EngineOptions, ServerOptions, split_options
from .routes import ROUTES, include_routes
from .services.loading import default_model_name
from .state import LoadErrorHandler, ServerState


def _telemetry_config() -> dict[str, Any]:
    """FastAPI's OpenTelemetry hooks look up the global tracer and meter providers on every request; keep
    them only where OpenTelemetry is being set up (an ``OTEL_*`` variable or FASTAPI_OTEL_AUTO_CONFIGURE)."""
    wanted = (
        any(k.startswith("OTEL_") for k in os.environ)
        or os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true"
    )
    return {} if wanted else {"tracing": False, "metrics": False, "logs": False}


def create_app(
    model_or_path: Any,
    server_options: Optional[ServerOptions] = None,
    engine_options: Optional[EngineOptions] = None,
    *,
    on_load_error: Optional[LoadErrorHandler] = None,
    **options: Any,
) -> FastAPI:
    """The FastAPI app serving ``model_or_path`` (a model directory, a PyFuncModel, an agent object or a
    ModelService).

    Options come as ``ServerOptions`` / ``EngineOptions`` objects and/or as keyword arguments named after
    their fields (``api_key=...``, ``max_num_seqs=...``). A directory loads in the background: ``/health``
    answers 503 until it is ready. ``on_load_error`` is called with the reason if it fails to load.
    """
    server, engine = split_options(server_options, engine_options, **options)
    state = ServerState(server, engine, server.served_model_name or default_model_name(model_or_path))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = None
        state.drain.install(server.graceful_timeout)  # stops that finish the open streams (SIGTERM, Ctrl+C)
        if state.service is not None or state.load_error is not None:
            pass  # loaded before startup (a Ray replica loads its model while it starts: servelm.serving.ray)
        elif isinstance(model_or_path, (str, bytes)) or hasattr(model_or_path, "__fspath__"):
            task = asyncio.create_task(state.load(model_or_path, on_load_error))
        else:
            await state.load(model_or_path, on_load_error)
        try:
            yield
        finally:
            if task is not None and not task.done():
                task.cancel()
            if state.service is not None:
                await state.service.stop()

    app = FastAPI(
        title="servelm",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs" if server.docs else None,
        redoc_url=None,
        openapi_url="/openapi.json",
        telemetry=_telemetry_config(),  # type: ignore[arg-type]  # FastAPI's TelemetryConfig takes these keys
    )
    app.state.servelm = state
    app.add_middleware(RequestLog, metrics=state.metrics, routes=ROUTES, expose_errors=server.expose_errors)
    _install_error_handlers(app)
    include_routes(app)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]  # the bodies the routes read themselves
    return app


def _install_error_handlers(app: FastAPI) -> None:
    """Every error any route (or a path no route has) produces, as an OpenAI error body."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return error_response(validation_error(exc))  # type: ignore[arg-type]

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            error = APIError(
                404, f"{request.method} {request.url.path} is not a route of this server", code="unknown_route"
            )
        elif exc.status_code == 405:
            error = APIError(
                405,
                f"{request.method} is not allowed on {request.url.path}",
                code="method_not_allowed",
                headers=dict(exc.headers or {}),
            )
        else:
            error = APIError(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
        return error_response(error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return error_response(as_api_error(exc, "internal"))
