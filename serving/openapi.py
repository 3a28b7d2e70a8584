"""The server's OpenAPI document (``GET /openapi.json``): every route, its request body and answers from the
pydantic protocol types, every error in OpenAI's shape.

The routes read their bodies themselves (a bad body is answered with an OpenAI error naming the field, and a
stream is primed before its headers), so FastAPI sees no body parameter to describe: this module adds the
bodies, the answers (JSON, and SSE where the route streams) and the error statuses to what FastAPI lists.
"""

from __future__ import annotations

from typing import Any, Optional

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from servelm.agents import ChatCompletionRequest, ChatCompletionResponse, CompletionRequest
from servelm.agents.responses_types import ResponsesAgentRequest, ResponsesAgentResponse

REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    """What failed: a message, its type, the request field it concerns, a code."""

    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    """Every error of every route (OpenAI's shape)."""

    error: ErrorDetail


#: (path, method) -> the JSON body the route reads
BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("/v1/chat/completions", "post"): ChatCompletionRequest,
    ("/v1/completions", "post"): CompletionRequest,
    ("/v1/responses", "post"): ResponsesAgentRequest,
}
#: (path, method) -> the JSON answer (the others answer free-form JSON or text)
ANSWERS: dict[tuple[str, str], type[BaseModel]] = {
    ("/v1/chat/completions", "post"): ChatCompletionResponse,
    ("/v1/responses", "post"): ResponsesAgentResponse,
    ("/v1/responses/{response_id}", "get"): ResponsesAgentResponse,
}
#: routes that stream server-sent events when the body asks (``"stream": true``)
STREAMING = {
    ("/v1/chat/completions", "post"),
    ("/v1/completions", "post"),
    ("/v1/responses", "post"),
    ("/invocations", "post"),
}
#: the error statuses each kind of route may answer
MODEL_ROUTE_ERRORS = {
    "400": "a bad field (named in `param`)",
    "401": "a missing or wrong API key",
    "404": "an unknown model",
    "408": "the request was not sent whole in time",
    "413": "the body is too large",
    "415": "an unsupported content type",
    "429": "too many requests running and waiting (see Retry-After)",
    "500": "the model failed (the body gives the request id)",
    "503": "the model is loading, its engine restarting, or the server is full (see Retry-After)",
    "504": "the model did not answer in time",
}
TEXT_ROUTES = {("/ping", "get"), ("/version", "get"), ("/metrics", "get")}


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app`` (computed once, then served as it is)."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "validation") for m in BODIES.values()]
    models += [(m, "serialization") for m in ANSWERS.values()] + [(ErrorResponse, "serialization")]
    names, definitions = models_json_schema(models, ref_template=REF)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(definitions.get("$defs", {}))
    error = {"application/json": {"schema": names[(ErrorResponse, "serialization")]}}
    for path, operations in doc.get("paths", {}).items():
        for method, operation in operations.items():
            key = (path, method)
            operation.pop("requestBody", None)
            if key in BODIES:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": names[(BODIES[key], "validation")]}},
                }
            elif key == ("/invocations", "post"):
                operation["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/csv": {"schema": {}},  # any text: MLflow's CSV parsing decides
                    },
                }
            operation["responses"] = _answers(key, names, error)
    app.openapi_schema = doc
    return doc


def _answers(key: tuple[str, str], names: dict[Any, Any], error: dict[str, Any]) -> dict[str, Any]:
    if key in TEXT_ROUTES:
        return {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}}
    if key == ("/health", "get"):
        health = {"type": "object", "properties": {"status": {"type": "string"}, "detail": {"type": "string"}}}
        return {
            "200": {"description": "the model serves", "content": {"application/json": {"schema": health}}},
            "503": {
                "description": "loading, failed, or restarting",
                "content": {"application/json": {"schema": health}},
            },
        }
    content: dict[str, Any] = {
        "application/json": {"schema": names[(ANSWERS[key], "serialization")] if key in ANSWERS else {}}
    }
    if key in STREAMING:
        content["text/event-stream"] = {"schema": {"type": "string", "description": "server-sent events"}}
    answers: dict[str, Any] = {"200": {"description": "OK", "content": content}}
    for status, why in MODEL_ROUTE_ERRORS.items():
        answers[status] = {"description": why, "content": error}
    return answers
