"""``POST /v1/chat/completions``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from servelm.agents import ChatCompletionRequest

from ..errors import APIError
from ..flow import accept, run_json, run_stream
from ..framing import dumps
from ..services.base import CHAT

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    served, service, chat = await accept(request, ChatCompletionRequest, CHAT)
    if (chat.n or 1) > 1 and not service.capabilities.n:
        raise APIError(400, "n > 1 is not supported by this model", param="n", code="unsupported_value")
    if chat.logprobs and not service.capabilities.logprobs:
        raise APIError(
            400,
            f"logprobs are not available from this model ({service.kind})",
            param="logprobs",
            code="unsupported_value",
        )
    if chat.stream:
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        return await run_stream(
            request, served, _sse(service.chat_events(chat, served.name, include_usage)), chat_error_events
        )

    async def answer() -> Any:
        response = await service.chat(chat, served.name)
        return response.model_dump(exclude_none=True)

    return await run_json(request, served, answer)


async def _sse(chunks: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """JSON chunk texts as SSE ``data`` events, then ``[DONE]``."""
    async for data in chunks:
        yield {"data": data}
    yield {"data": "[DONE]"}


def chat_error_events(exc: APIError) -> list[dict[str, Any]]:
    """How a chat stream that already started reports an error: the error body, then ``[DONE]``."""
    return [{"data": dumps(exc.body())}, {"data": "[DONE]"}]
