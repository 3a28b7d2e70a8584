"""What the HTTP layer needs from a model: the ``ModelService`` interface, and the shared logic that
lets any chat-speaking service also answer the Responses API.

Routes stay thin: they parse, admit, and hand typed requests to a service; services own the model.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Optional

from servelm.agents import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ResponsesAgentRequest
from servelm.agents.ids import new_id

from .conversions import chat_message_to_output_items, chat_tools_to_responses, responses_to_chat_messages
from .errors import APIError
from .responses_stream import ResponsesStreamBuilder


class ModelService:
    """A loaded model behind the OpenAI and MLflow endpoints. Subclasses override what they support."""

    #: routes this service answers: "chat", "responses", "invocations"
    routes: frozenset[str] = frozenset()
    #: the MLflow task or engine kind, shown in /v1/models
    kind: str = "model"

    async def chat(self, request: ChatCompletionRequest, model: str) -> ChatCompletionResponse:
        raise APIError(404, "this model does not answer chat completions", code="unsupported_endpoint")

    def chat_stream(self, request: ChatCompletionRequest, model: str) -> AsyncIterator[ChatCompletionChunk]:
        raise APIError(404, "this model does not answer chat completions", code="unsupported_endpoint")

    async def responses(self, request: ResponsesAgentRequest, model: str) -> dict[str, Any]:
        """A Responses answer computed through chat completions (for chat-speaking services)."""
        chat = await self.chat(responses_as_chat_request(request, model), model)
        items = chat_message_to_output_items(chat.choices[0].message) if chat.choices else []
        usage = _responses_usage(chat.usage.model_dump()) if chat.usage else None
        return {"id": new_id("resp"), "object": "response", "created_at": time.time(), "status": "completed", "model": model,
                "output": items, "usage": usage, "custom_outputs": chat.custom_outputs, "parallel_tool_calls": True,
                "tool_choice": "auto", "tools": [], "error": None, "incomplete_details": None}

    async def responses_stream(self, request: ResponsesAgentRequest, model: str) -> AsyncIterator[dict[str, Any]]:
        """A Responses event stream computed from the chat stream."""
        builder = ResponsesStreamBuilder(model)
        for event in builder.start():
            yield event
        text_id = new_id("msg")
        calls: dict[int, dict[str, Any]] = {}
        usage = None
        async for chunk in self.chat_stream(responses_as_chat_request(request, model), model):
            if chunk.usage is not None:
                usage = _responses_usage(chunk.usage.model_dump())
            if chunk.custom_outputs:
                builder.custom_outputs = chunk.custom_outputs
            for choice in chunk.choices[:1]:
                if choice.delta.content:
                    for event in builder.text_delta(text_id, choice.delta.content):
                        yield event
                for call in choice.delta.tool_calls or []:
                    slot = calls.setdefault(call.index, {"type": "function_call", "id": new_id("fc"), "call_id": call.id or new_id("call"), "name": "", "arguments": ""})
                    if call.function is not None:
                        slot["name"] += call.function.name or ""
                        slot["arguments"] += call.function.arguments or ""
        for index in sorted(calls):
            for event in builder.item_done(calls[index]):
                yield event
        for event in builder.finish(usage):
            yield event

    async def invoke(self, data: Any, params: Optional[dict[str, Any]]) -> Any:
        raise APIError(404, "this model does not answer /invocations", code="unsupported_endpoint")

    def invoke_stream(self, data: Any, params: Optional[dict[str, Any]]) -> AsyncIterator[Any]:
        raise APIError(400, "this model cannot stream", param="stream", code="stream_unsupported")

    async def start(self) -> None:
        """Start background work (engine loops); called once the app starts."""

    async def stop(self) -> None:
        """Stop background work; called on shutdown after in-flight requests drained."""

    def health_error(self) -> Optional[str]:
        """Why the loaded model cannot serve any more (e.g. its engine process died), or None."""
        return None


def responses_as_chat_request(request: ResponsesAgentRequest, model: str) -> ChatCompletionRequest:
    """A Responses request as the equivalent chat-completions request."""
    tools = [{"type": "function", "function": {k: v for k, v in t.items() if k != "type"}} for t in request.tools or [] if t.get("type") == "function"]
    return ChatCompletionRequest(
        model=model, messages=responses_to_chat_messages(request), temperature=request.temperature, top_p=request.top_p,
        max_tokens=request.max_output_tokens, tools=tools or None, custom_inputs=request.custom_inputs, user=request.user,
    )


def _responses_usage(usage: dict[str, int]) -> dict[str, Any]:
    return {"input_tokens": usage.get("prompt_tokens", 0), "output_tokens": usage.get("completion_tokens", 0), "total_tokens": usage.get("total_tokens", 0),
            "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}


__all__ = ["ModelService", "responses_as_chat_request", "chat_tools_to_responses"]
