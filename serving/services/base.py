"""What the HTTP layer needs from a model: the ``ModelService`` interface, and the shared logic that
lets any chat-speaking service also answer text completions and the Responses API.

Routes stay thin: they parse, admit, and hand typed requests to a service; services own the model.
A service declares what it answers once, in ``capabilities``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Optional

from servelm.agents import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, CompletionRequest, ResponsesAgentRequest
from servelm.agents.ids import new_id

from ..conversions import chat_message_to_output_items, responses_to_chat_messages
from ..errors import APIError
from ..framing import CompletionChunkFramer, dumps, openai_chat_chunks
from ..responses_stream import ResponsesStreamBuilder

CHAT, COMPLETIONS, RESPONSES, INVOCATIONS = "chat", "completions", "responses", "invocations"


@dataclass(frozen=True)
class Capabilities:
    """What a service answers: its routes, and whether chat requests may ask for several choices."""

    routes: frozenset[str]
    n: bool = False  # n > 1 choices per request


class ModelService:
    """A loaded model behind the OpenAI and MLflow endpoints. Subclasses override what they support."""

    #: the MLflow task or engine kind, shown in /v1/models
    kind: str = "model"
    capabilities: Capabilities = Capabilities(frozenset())

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start background work (engine loops); called once the app starts."""

    async def stop(self) -> None:
        """Stop background work; called on shutdown after in-flight requests drained."""

    def health_error(self) -> Optional[str]:
        """Why the loaded model cannot serve any more (e.g. its engine process died), or None."""
        return None

    def require(self, route: str) -> None:
        """404 naming what the model does answer, when it does not answer ``route``."""
        if route not in self.capabilities.routes:
            answers = ", ".join(sorted(self.capabilities.routes)) or "nothing"
            raise APIError(404, f"this model ({self.kind}) does not answer {route}; it answers: {answers}", code="unsupported_endpoint")

    # ------------------------------------------------------------------ chat completions
    async def chat(self, request: ChatCompletionRequest, model: str) -> ChatCompletionResponse:
        raise APIError(404, "this model does not answer chat completions", code="unsupported_endpoint")

    def chat_stream(self, request: ChatCompletionRequest, model: str) -> AsyncIterator[ChatCompletionChunk]:
        raise APIError(404, "this model does not answer chat completions", code="unsupported_endpoint")

    async def chat_events(self, request: ChatCompletionRequest, model: str, include_usage: bool) -> AsyncIterator[str]:
        """The chat stream as OpenAI's chunk JSON texts (the route adds ``[DONE]``)."""
        async for chunk in openai_chat_chunks(self.chat_stream(request, model), model, include_usage):
            yield dumps(chunk)

    # ------------------------------------------------------------------ text completions
    async def completion(self, request: CompletionRequest, model: str) -> dict[str, Any]:
        """A text completion answered through chat: each prompt is one user message."""
        choices = []
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for index, prompt in enumerate(_text_prompts(request)):
            chat = await self.chat(_prompt_as_chat(request, prompt, model), model)
            choice = chat.choices[0] if chat.choices else None
            text = choice.message.text() if choice is not None else ""
            choices.append({"index": index, "text": (prompt + text) if request.echo else text, "logprobs": None,
                            "finish_reason": choice.finish_reason if choice is not None else "stop"})
            if chat.usage is not None:
                for key in usage:
                    usage[key] += getattr(chat.usage, key)
        return {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model, "choices": choices, "usage": usage}

    async def completion_events(self, request: CompletionRequest, model: str, include_usage: bool) -> AsyncIterator[str]:
        """A streamed text completion answered through the chat stream (one prompt)."""
        prompts = _text_prompts(request)
        if len(prompts) != 1:
            raise APIError(400, "this model streams one prompt at a time", param="prompt")
        framer = CompletionChunkFramer(model)
        if request.echo:
            yield framer.choice(0, prompts[0])
        usage = None
        reason = "stop"
        async for chunk in self.chat_stream(_prompt_as_chat(request, prompts[0], model), model):
            usage = chunk.usage or usage
            for choice in chunk.choices[:1]:
                if choice.delta.content:
                    yield framer.choice(0, choice.delta.content)
                reason = choice.finish_reason or reason
        yield framer.choice(0, "", reason)
        if include_usage:
            yield framer.usage(usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)

    # ------------------------------------------------------------------ responses
    async def responses(self, request: ResponsesAgentRequest, model: str) -> dict[str, Any]:
        """A Responses answer computed through chat completions (for chat-speaking services)."""
        chat = await self.chat(responses_as_chat_request(request, model), model)
        builder = ResponsesStreamBuilder(model)
        builder.items = chat_message_to_output_items(chat.choices[0].message) if chat.choices else []
        builder.custom_outputs = chat.custom_outputs
        return builder.response("completed", usage=responses_usage(chat.usage.model_dump()) if chat.usage else None)

    async def responses_stream(self, request: ResponsesAgentRequest, model: str) -> AsyncIterator[dict[str, Any]]:
        """A Responses event stream computed from the chat stream. The first chat chunk is awaited before
        ``response.created``, so that a request the model refuses fails before any event is sent."""
        builder = ResponsesStreamBuilder(model)
        chunks = self.chat_stream(responses_as_chat_request(request, model), model)
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            first = None
        for event in builder.start():
            yield event
        text_id = new_id("msg")
        calls: dict[int, dict[str, Any]] = {}
        usage = None

        async def rest() -> AsyncIterator[ChatCompletionChunk]:
            if first is not None:
                yield first
                async for chunk in chunks:
                    yield chunk

        async for chunk in rest():
            if chunk.usage is not None:
                usage = responses_usage(chunk.usage.model_dump())
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

    # ------------------------------------------------------------------ /invocations
    async def invoke(self, data: Any, params: Optional[dict[str, Any]]) -> Any:
        raise APIError(404, "this model does not answer /invocations", code="unsupported_endpoint")

    def invoke_stream(self, data: Any, params: Optional[dict[str, Any]]) -> AsyncIterator[Any]:
        raise APIError(400, "this model cannot stream", param="stream", code="stream_unsupported")


def responses_as_chat_request(request: ResponsesAgentRequest, model: str) -> ChatCompletionRequest:
    """A Responses request as the equivalent chat-completions request."""
    tools = [{"type": "function", "function": {k: v for k, v in t.items() if k != "type"}} for t in request.tools or [] if t.get("type") == "function"]
    return ChatCompletionRequest(
        model=model, messages=responses_to_chat_messages(request), temperature=request.temperature, top_p=request.top_p,
        max_tokens=request.max_output_tokens, tools=tools or None, custom_inputs=request.custom_inputs, user=request.user,
    )


def responses_usage(usage: dict[str, int]) -> dict[str, Any]:
    """Chat usage counts in the Responses API's shape."""
    return {"input_tokens": usage.get("prompt_tokens", 0), "output_tokens": usage.get("completion_tokens", 0), "total_tokens": usage.get("total_tokens", 0),
            "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}


def _text_prompts(request: CompletionRequest) -> list[str]:
    prompts = request.prompts()
    if not all(isinstance(p, str) for p in prompts):
        raise APIError(400, "this model takes text prompts, not token ids", param="prompt")
    return prompts  # type: ignore[return-value]


def _prompt_as_chat(request: CompletionRequest, prompt: str, model: str) -> ChatCompletionRequest:
    """A completion prompt as a one-message chat request with the same sampling parameters."""
    fields = request.model_dump(exclude={"prompt", "echo", "logprobs", "suffix", "best_of", "model", "n", "stream", "stream_options"}, exclude_none=True)
    return ChatCompletionRequest.model_validate({**fields, "model": model, "messages": [{"role": "user", "content": prompt}]})
