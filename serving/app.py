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

from . import local_models
from .errors import APIError, as_api_error, validation_error
from .http import error_response
from .logs import RequestLog
from .openapi import openapi_document
from .options import EngineOptions, ModelSpec, ServerOptions, split_options
from .routes import ROUTES, include_routes
from .services.build import default_model_name
from .state import LoadErrorHandler, ServerState
from .tracing import configure_tracing, tracer


def _telemetry_config() -> dict[str, Any]:
    """FastAPI's OpenTelemetry hooks look up the global tracer and meter providers on every request; keep
    them only where OpenTelemetry is being set up (an ``OTEL_*`` variable or FASTAPI_OTEL_AUTO_CONFIGURE), and
    never its spans while servelm traces (servelm's request span replaces them: one span per request)."""
    wanted = (
        any(k.startswith("OTEL_") for k in os.environ)
        or os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true"
    )
    if not wanted:
        return {"tracing": False, "metrics": False, "logs": False}
    return {"tracing": False} if tracer() is not None else {}


def create_app(
    model_or_path: Any,
    server_options: Optional[ServerOptions] = None,
    engine_options: Optional[EngineOptions] = None,
    *,
    on_load_error: Optional[LoadErrorHandler] = None,
    **options: Any,
) -> FastAPI:
    """The FastAPI app serving ``model_or_path`` (a model directory, a PyFuncModel, an agent object or a
    ModelService), or several models: a list of ``ModelSpec`` (requests pick one by ``model``; the first is
    the default).

    Options come as ``ServerOptions`` / ``EngineOptions`` objects and/or as keyword arguments named after
    their fields (``api_key=...``, ``max_num_seqs=...``). A directory loads in the background: ``/health``
    answers 503 until it is ready. ``on_load_error`` is called with the reason if it fails to load.
    """
    server, engine = split_options(server_options, engine_options, **options)
    sources, state = _server_state(model_or_path, server, engine)
    configure_tracing()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = []
        state.drain.install(server.graceful_timeout)  # stops that finish the open streams (SIGTERM, Ctrl+C)
        state.loop = asyncio.get_running_loop()
        local_models.register(state)  # agents' in-process clients reach the models served beside them
        for served, source in zip(state.models.values(), sources):
            if served.service is not None or served.load_error is not None:
                pass  # loaded before startup (a Ray replica loads its models while it starts: servelm.serving.ray)
            elif isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
                tasks.append(asyncio.create_task(served.load(source, on_load_error)))
            else:
                await served.load(source, on_load_error)
        try:
            yield
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            for served in state.models.values():
                if served.service is not None:
                    await served.service.stop()
            local_models.unregister(state)

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
    app.state.servelm_sources = sources  # what each model loads from (a Ray replica loads them before startup)
    app.add_middleware(RequestLog, metrics=state.metrics, routes=ROUTES, expose_errors=server.expose_errors)
    _install_error_handlers(app)
    include_routes(app)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]  # the bodies the routes read themselves
    return app


def _server_state(model_or_path: Any, server: ServerOptions, engine: EngineOptions) -> tuple[list[Any], ServerState]:
    """(what each model loads from, the state naming them): one model, or a list of ``ModelSpec`` (or dicts)
    whose engine options default to those given beside the list."""
    if not isinstance(model_or_path, (list, tuple)):
        return [model_or_path], ServerState(
            server, engine, server.served_model_name or default_model_name(model_or_path)
        )
    specs = [spec if isinstance(spec, ModelSpec) else ModelSpec.model_validate(spec) for spec in model_or_path]
    # engine options given beside the list apply to every model, under what its own spec sets
    given = {k: v for k, v in engine.model_dump().items() if v != EngineOptions.model_fields[k].default}
    specs = [
        spec.model_copy(
            update={
                "engine": EngineOptions(**{**given, **spec.engine.model_dump(include=spec.engine.model_fields_set)})
            }
        )
        for spec in specs
    ]
    if not specs:
        raise ValueError("no model to serve")
    if server.served_model_name and len(specs) > 1:
        raise ValueError("served_model_name names one model; with several, name each (NAME=PATH, or name: in a config)")
    names = [spec.name or default_model_name(spec.model) for spec in specs]
    if server.served_model_name:
        names[0] = server.served_model_name
    first, rest = specs[0], specs[1:]
    more = [(n, s.engine, s.max_concurrency, s.max_queue) for n, s in zip(names[1:], rest)]
    state = ServerState(server, first.engine, names[0], more, (first.max_concurrency, first.max_queue))
    return [spec.model for spec in specs], state


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
