"""``POST /v1/completions``: OpenAI's legacy text completions (prompt in, text out)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from servelm.agents import CompletionRequest

from ..errors import APIError
from ..flow import accept, run_json, run_stream
from ..services.base import COMPLETIONS
from .chat import _sse, chat_error_events

router = APIRouter()


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    served, service, body = await accept(request, CompletionRequest, COMPLETIONS)
    if body.suffix:
        raise APIError(
            400,
            "suffix is not supported (no model served here fills in the middle)",
            param="suffix",
            code="unsupported_value",
        )
    if body.best_of is not None and body.best_of != (body.n or 1):
        raise APIError(
            400, "best_of must equal n: completions are not ranked here", param="best_of", code="unsupported_value"
        )
    if body.logprobs is not None and not service.capabilities.logprobs:
        raise APIError(
            400,
            f"logprobs are not available from this model ({service.kind})",
            param="logprobs",
            code="unsupported_value",
        )
    if (body.n or 1) > 1 and not service.capabilities.n:
        raise APIError(400, "n > 1 is not supported by this model", param="n", code="unsupported_value")
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await run_stream(
            request, served, _sse(service.completion_events(body, served.name, include_usage)), chat_error_events
        )

    async def answer() -> Any:
        return await service.completion(body, served.name)

    return await run_json(request, served, answer)
