"""``create_app``: the FastAPI app serving one model on the OpenAI and MLflow scoring endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import time
from typing import Any, AsyncIterator, Callable, Optional

import anyio
from fastapi import FastAPI
from pydantic import ValidationError
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from servelm.agents import ChatCompletionRequest, ResponsesAgentRequest, __version__
from servelm.agents.ids import now_seconds
from servelm.flavors import SchemaEnforcementError

from .admission import Admission
from .chat_stream import openai_chat_chunks
from .errors import APIError, validation_error
from .http import SlotEventSourceResponse, StatusCounter, guard_request, check_api_key, error_response, parse_body, read_json
from .invocations import parse_invocation
from .loading import build_service, default_model_name
from .metrics import ServerMetrics
from .service import ModelService
from .settings import ServerSettings

log = logging.getLogger("servelm.serving")
ROUTES = {"/v1/chat/completions", "/v1/responses", "/v1/models", "/invocations", "/health", "/ping", "/version", "/metrics"}


class ServerState:
    """The model service once loaded (or the load error), plus limits and metrics."""

    def __init__(self, settings: ServerSettings, model_name: str):
        self.settings = settings
        self.model_name = model_name
        self.metrics = ServerMetrics(model_name)
        self.admission = Admission(settings.max_concurrency, settings.max_queue, self.metrics)
        self.service: Optional[ModelService] = None
        self.load_error: Optional[str] = None
        self.created = now_seconds()

    def ready(self) -> ModelService:
        if self.service is None:
            message = f"model failed to load: {self.load_error}" if self.load_error else "model is still loading"
            raise APIError(503, message, code="model_not_ready", headers={"Retry-After": "1"})
        return self.service

    def check_model(self, name: Optional[str]) -> None:
        if name and name != self.model_name:
            raise APIError(404, f"The model `{name}` does not exist; this server serves `{self.model_name}`.", param="model", code="model_not_found")


def _telemetry_config() -> dict[str, Any]:
    """FastAPI's OpenTelemetry hooks look up the global tracer and meter providers on every request; keep
    them only where OpenTelemetry is being set up (an ``OTEL_*`` variable or FASTAPI_OTEL_AUTO_CONFIGURE)."""
    wanted = any(k.startswith("OTEL_") for k in os.environ) or os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true"
    return {} if wanted else {"tracing": False, "metrics": False, "logs": False}


def create_app(model_or_path: Any, **settings: Any) -> FastAPI:
    """The FastAPI app serving ``model_or_path`` (a model directory, a PyFuncModel, an agent object or a
    ModelService). Settings are those of ``ServerSettings``; a directory loads in the background and
    ``/health`` answers 503 until it is ready."""
    config = ServerSettings.from_kwargs(**settings)
    state = ServerState(config, config.served_model_name or default_model_name(model_or_path))

    async def load() -> None:
        try:
            service = await asyncio.to_thread(build_service, model_or_path, config)
            if hasattr(service, "bind_metrics"):
                service.bind_metrics(state.metrics)
            await service.start()
            # Everything loaded so far (torch, transformers, vLLM, the model) lives as long as the server:
            # freeze it out of the cyclic collector, whose full passes over that heap stall the event loop.
            gc.collect()
            gc.freeze()
            state.service = service
            log.info("model %s ready (%s)", state.model_name, service.kind)
        except Exception as exc:  # reported on /health and in the log; the server stays up to say so
            state.load_error = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load: %s", state.load_error)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if isinstance(model_or_path, (str, bytes)) or hasattr(model_or_path, "__fspath__"):
            task = asyncio.create_task(load())
        else:
            await load()
            task = None
        try:
            yield
        finally:
            if task is not None and not task.done():
                task.cancel()
            if state.service is not None:
                await state.service.stop()

    app = FastAPI(title="servelm", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None, telemetry=_telemetry_config())
    app.state.servelm = state
    app.add_middleware(StatusCounter, metrics=state.metrics, routes=ROUTES)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        return error_response(APIError(400, f"{param}: {first.get('msg', 'invalid request')}", param=param))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(APIError(500, f"internal error: {type(exc).__name__}: {exc}", code="internal_error"))

    # ------------------------------------------------------------------ health and info
    @app.get("/health")
    async def health() -> Response:
        if state.service is None:
            detail = state.load_error or "loading"
            return JSONResponse({"status": "error" if state.load_error else "loading", "detail": detail}, status_code=503)
        broken = state.service.health_error()
        if broken:
            return JSONResponse({"status": "error", "detail": broken}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/ping")
    async def ping() -> Response:
        return PlainTextResponse("\n", status_code=200 if state.service is not None and not state.service.health_error() else 503)

    @app.get("/version")
    async def version() -> Response:
        return PlainTextResponse(__version__)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        check_api_key(request, config.api_key)
        kind = state.service.kind if state.service is not None else "loading"
        return JSONResponse({"object": "list", "data": [{"id": state.model_name, "object": "model", "created": state.created, "owned_by": "servelm", "task": kind}]})

    # ------------------------------------------------------------------ shared request flow
    async def run_json(request: Request, work: Callable[[], Any]) -> Response:
        await state.admission.acquire()
        try:
            result = await guard_request(request, work, config.timeout)
        except (APIError, asyncio.CancelledError):
            raise
        except SchemaEnforcementError as exc:
            raise APIError(400, f"input does not match the model signature: {exc}", code="invalid_input") from None
        except ValidationError as exc:
            raise validation_error(exc) from None
        except Exception as exc:
            log.exception("model error")
            raise APIError(500, f"model error: {type(exc).__name__}: {exc}", code="model_error") from exc
        finally:
            state.admission.release()
        return JSONResponse(result)

    async def run_stream(events: Callable[[], AsyncIterator[dict[str, Any]]], on_error: Callable[[APIError], list[dict[str, Any]]]) -> Response:
        await state.admission.acquire()
        return SlotEventSourceResponse(_timed(events(), on_error), state.admission.release)

    async def _timed(events: AsyncIterator[dict[str, Any]], on_error: Callable[[APIError], list[dict[str, Any]]]) -> AsyncIterator[dict[str, Any]]:
        start = last = time.perf_counter()
        first = True
        try:
            with anyio.fail_after(config.timeout):
                async for event in events:
                    now = time.perf_counter()
                    if first:
                        state.metrics.ttft.observe(now - start)
                        first = False
                    else:
                        state.metrics.itl.observe(now - last)
                    last = now
                    yield event
        except TimeoutError:
            for event in on_error(APIError(504, f"the model did not finish within {config.timeout:g} s", code="timeout")):
                yield event
        except APIError as exc:
            for event in on_error(exc):
                yield event
        except SchemaEnforcementError as exc:
            for event in on_error(APIError(400, f"input does not match the model signature: {exc}", code="invalid_input")):
                yield event
        except ValidationError as exc:
            for event in on_error(validation_error(exc)):
                yield event
        except Exception as exc:
            log.exception("model error while streaming")
            for event in on_error(APIError(500, f"model error: {type(exc).__name__}: {exc}", code="model_error")):
                yield event
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ chat completions
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        check_api_key(request, config.api_key)
        service = state.ready()
        chat = parse_body(ChatCompletionRequest, await read_json(request, config.max_body_bytes))
        state.check_model(chat.model)
        if "chat" not in service.routes:
            raise APIError(404, f"this model ({service.kind}) does not answer chat completions; use /invocations", code="unsupported_endpoint")
        if (chat.n or 1) > 1 and not getattr(service, "supports_n", False):
            raise APIError(400, "n > 1 is not supported by this model", param="n", code="unsupported_value")
        if chat.stream:
            include_usage = bool(chat.stream_options and chat.stream_options.include_usage)

            async def chat_events() -> AsyncIterator[dict[str, Any]]:
                native = getattr(service, "openai_chat_events", None)  # engines that frame chunks themselves
                if native is not None:
                    async for data in native(chat, state.model_name, include_usage):
                        yield {"data": data}
                else:
                    async for chunk in openai_chat_chunks(service.chat_stream(chat, state.model_name), state.model_name, include_usage):
                        yield {"data": json.dumps(chunk, separators=(",", ":"))}
                yield {"data": "[DONE]"}

            def chat_error(exc: APIError) -> list[dict[str, Any]]:
                return [{"data": json.dumps(exc.body())}, {"data": "[DONE]"}]

            return await run_stream(chat_events, chat_error)

        async def answer() -> Any:
            response = await service.chat(chat, state.model_name)
            return response.model_dump(exclude_none=True)

        return await run_json(request, answer)

    # ------------------------------------------------------------------ responses
    @app.post("/v1/responses")
    async def responses(request: Request) -> Response:
        check_api_key(request, config.api_key)
        service = state.ready()
        body = await read_json(request, config.max_body_bytes)
        req = parse_body(ResponsesAgentRequest, body)
        state.check_model(req.model)
        if "responses" not in service.routes:
            raise APIError(404, f"this model ({service.kind}) does not answer the Responses API; use /invocations", code="unsupported_endpoint")
        if req.stream:
            sequence = {"n": 0}

            async def response_events() -> AsyncIterator[dict[str, Any]]:
                async for event in service.responses_stream(req, state.model_name):
                    sequence["n"] = event.get("sequence_number", sequence["n"]) + 1
                    yield {"event": event["type"], "data": json.dumps(event, separators=(",", ":"))}

            def response_error(exc: APIError) -> list[dict[str, Any]]:
                error = {"type": "error", "code": exc.code, "message": exc.message, "param": exc.param, "sequence_number": sequence["n"]}
                failed = {"type": "response.failed", "sequence_number": sequence["n"] + 1,
                          "response": {"id": "resp-failed", "object": "response", "created_at": time.time(), "status": "failed", "model": state.model_name,
                                       "output": [], "error": {"code": exc.code or "server_error", "message": exc.message}, "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}}
                return [{"event": "error", "data": json.dumps(error)}, {"event": "response.failed", "data": json.dumps(failed)}]

            return await run_stream(response_events, response_error)

        async def answer() -> Any:
            return await service.responses(req, state.model_name)

        return await run_json(request, answer)

    # ------------------------------------------------------------------ MLflow scoring
    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        check_api_key(request, config.api_key)
        service = state.ready()
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if content_type not in ("application/json", ""):
            raise APIError(415, f"content type {content_type!r} is not supported; send application/json", code="unsupported_media_type")
        invocation = parse_invocation(await read_json(request, config.max_body_bytes))
        if invocation.stream:

            async def invoke_events() -> AsyncIterator[dict[str, Any]]:
                async for item in service.invoke_stream(invocation.data, invocation.params):
                    yield {"data": json.dumps(item, default=_json_default, separators=(",", ":"))}

            def invoke_error(exc: APIError) -> list[dict[str, Any]]:
                return [{"event": "error", "data": json.dumps(exc.body())}]

            return await run_stream(invoke_events, invoke_error)

        async def answer() -> Any:
            result = await service.invoke(invocation.data, invocation.params)
            result = _jsonable(result)
            return result if invocation.raw else {"predictions": result}

        return await run_json(request, answer)

    return app


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(exclude_none=True)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict(orient="records")
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if isinstance(obj, (bytes, bytearray)):
        import base64

        return base64.b64encode(bytes(obj)).decode()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _jsonable(result: Any) -> Any:
    if isinstance(result, (dict, list, str, int, float, bool)) or result is None:
        return result
    return json.loads(json.dumps(result, default=_json_default))
