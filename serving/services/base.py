"""What the HTTP layer needs from a model: the ``ModelService`` interface, and the shared logic that
lets any chat-speaking service also answer text completions and the Responses API.

Routes stay thin: they parse, admit, and hand typed requests to a service; services own the model.
A service declares what it answers once, in ``capabilities``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Optional

from pydantic import ValidationError

from servelm.agents import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    ResponsesAgentRequest,
)
from servelm.agents.ids import new_id

from ..conversions import chat_message_to_output_items, responses_to_chat_messages
from ..errors import APIError, validation_error
from ..framing import CompletionChunkFramer, dumps, openai_chat_chunks
from ..metrics import ModelMetrics
from ..responses_stream import ResponsesStreamBuilder

CHAT, COMPLETIONS, RESPONSES, INVOCATIONS = "chat", "completions", "responses", "invocations"


@dataclass(frozen=True)
class Capabilities:
    """What a service answers: its routes, whether requests may ask for several choices, and whether
    they may ask for token log-probabilities."""

    routes: frozenset[str]
    n: bool = False  # n > 1 choices per request
    logprobs: bool = False


class ModelService:
    """A loaded model behind the OpenAI and MLflow endpoints. Subclasses override what they support."""

    #: the MLflow task or engine kind, shown in /v1/models
    kind: str = "model"
    capabilities: Capabilities = Capabilities(frozenset())
    #: what a request asks of it, as OpenTelemetry's GenAI conventions name it (chat, invoke_agent...)
    operation: str = "chat"
    #: this model's metrics under vLLM's names, and the name it is served as (set when a server loads it)
    model_metrics: Optional[ModelMetrics] = None
    served_name: str = "model"

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
            raise APIError(
                404,
                f"this model ({self.kind}) does not answer {route}; it answers: {answers}",
                code="unsupported_endpoint",
            )

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
            choices.append(
                {
                    "index": index,
                    "text": (prompt + text) if request.echo else text,
                    "logprobs": None,
                    "finish_reason": choice.finish_reason if choice is not None else "stop",
                }
            )
            if chat.usage is not None:
                for key in usage:
                    usage[key] += getattr(chat.usage, key)
        return {
            "id": new_id("cmpl"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": usage,
        }

    async def completion_events(
        self, request: CompletionRequest, model: str, include_usage: bool
    ) -> AsyncIterator[str]:
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
        """A Responses answer computed through chat completions (for chat-speaking services); cut by
        ``max_output_tokens``, it is ``incomplete``."""
        chat_request = responses_as_chat_request(request, model)
        chat = await self.chat(chat_request, model)
        builder = ResponsesStreamBuilder(model)
        choice = chat.choices[0] if chat.choices else None
        builder.items = chat_message_to_output_items(choice.message) if choice is not None else []
        if choice is not None and choice.logprobs is not None:
            for item in builder.items:
                for part in item.get("content") or []:
                    part["logprobs"] = [entry.model_dump(exclude_none=True) for entry in choice.logprobs.content or []]
        builder.custom_outputs = chat.custom_outputs
        usage = responses_usage(chat.usage.model_dump()) if chat.usage else None
        if choice is not None and choice.finish_reason == "length":
            return builder.response("incomplete", usage=usage, incomplete_details={"reason": "max_output_tokens"})
        return builder.response("completed", usage=usage)

    async def responses_stream(self, request: ResponsesAgentRequest, model: str) -> AsyncIterator[dict[str, Any]]:
        """A Responses event stream computed from the chat stream: text deltas, function calls with their
        argument deltas. The first chat chunk is awaited before ``response.created``, so that a request the
        model refuses fails before any event is sent."""
        builder = ResponsesStreamBuilder(model)
        chunks = self.chat_stream(responses_as_chat_request(request, model), model)
        try:
            first: Optional[ChatCompletionChunk] = await chunks.__anext__()
        except StopAsyncIteration:
            first = None
        for event in builder.start():
            yield event
        text_id = new_id("msg")
        calls: dict[int, str] = {}  # chat tool call index -> function_call item id
        usage = None
        incomplete = None

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
                logprobs = (
                    [e.model_dump(exclude_none=True) for e in choice.logprobs.content or []]
                    if choice.logprobs is not None
                    else None
                )
                if choice.delta.content:
                    for event in builder.text_delta(text_id, choice.delta.content, logprobs):
                        yield event
                for call in choice.delta.tool_calls or []:
                    if call.index not in calls:
                        calls[call.index] = new_id("fc")
                        function = call.function
                        for event in builder.call_added(
                            calls[call.index], call.id or new_id("call"), function.name or "" if function else ""
                        ):
                            yield event
                    if call.function is not None and call.function.arguments:
                        for event in builder.call_arguments(calls[call.index], call.function.arguments):
                            yield event
                if choice.finish_reason == "length":
                    incomplete = "max_output_tokens"
        for event in builder.finish(usage, incomplete):
            yield event

    # ------------------------------------------------------------------ /invocations
    async def invoke(self, data: Any, params: Optional[dict[str, Any]]) -> Any:
        raise APIError(404, "this model does not answer /invocations", code="unsupported_endpoint")

    def invoke_stream(self, data: Any, params: Optional[dict[str, Any]]) -> AsyncIterator[Any]:
        raise APIError(400, "this model cannot stream", param="stream", code="stream_unsupported")


def responses_as_chat_request(request: ResponsesAgentRequest, model: str) -> ChatCompletionRequest:
    """A Responses request as the equivalent chat-completions request (tools, tool_choice, text.format,
    logprobs and the sampling options carried over); 400 for what has no chat equivalent here."""
    tools = []
    for tool in request.tools or []:
        if tool.get("type") != "function":
            raise APIError(
                400,
                f"tools: tools of type {tool.get('type')!r} are not supported here (function tools are)",
                param="tools",
                code="unsupported_value",
            )
        tools.append({"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}})
    choice = request.tool_choice
    if isinstance(choice, dict):
        if choice.get("type") != "function" or not choice.get("name"):
            raise APIError(
                400,
                "tool_choice: only function tool choices are supported",
                param="tool_choice",
                code="unsupported_value",
            )
        choice = {"type": "function", "function": {"name": choice["name"]}}
    if request.reasoning and any(v is not None for v in request.reasoning.values()):
        raise APIError(
            400,
            "reasoning: this model does not reason in separate steps",
            param="reasoning",
            code="unsupported_parameter",
        )
    fields: dict[str, Any] = {
        "model": model,
        "messages": [m.model_dump(exclude_none=True) for m in responses_to_chat_messages(request)],
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_output_tokens,
        "tools": tools or None,
        "tool_choice": choice,
        "parallel_tool_calls": request.parallel_tool_calls,
        "custom_inputs": request.custom_inputs,
        "user": request.user,
        "metadata": request.metadata,
        "response_format": _text_format(request.text),
    }
    extra = request.model_extra or {}
    wants_logprobs = "message.output_text.logprobs" in _includes(extra.get("include"))
    top = extra.get("top_logprobs")
    if "ignore_eos" in extra:  # vLLM's extension, as on chat requests
        fields["ignore_eos"] = extra["ignore_eos"]
    if wants_logprobs or top:
        fields.update(logprobs=True, top_logprobs=top)
    try:
        return ChatCompletionRequest.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise validation_error(exc) from None


#: the Responses API's ``include`` values. For an LLM served here only the logprobs add anything: the others
#: ask for the output of hosted tools (refused with their tools), of reasoning items or of input images, which
#: these responses never carry, so asking for them is answered by their absence, as OpenAI answers it.
RESPONSES_INCLUDABLE = (
    "message.output_text.logprobs",
    "reasoning.encrypted_content",
    "message.input_image.image_url",
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
)


def _includes(value: Any) -> set[str]:
    """A request's ``include`` values, checked (a 400 naming ``include`` for anything else)."""
    if value is None:
        return set()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise APIError(400, "include: expected a list of strings", param="include", code="invalid_type")
    unknown = sorted(set(value) - set(RESPONSES_INCLUDABLE))
    if unknown:
        raise APIError(
            400,
            f"include: unknown value(s) {', '.join(map(repr, unknown))}; known: {', '.join(RESPONSES_INCLUDABLE)}",
            param="include",
            code="invalid_value",
        )
    return set(value)


def _text_format(text: Any) -> Optional[dict[str, Any]]:
    """The Responses ``text.format`` as a chat ``response_format``."""
    fmt = (text or {}).get("format") if isinstance(text, dict) else None
    if not fmt or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    return {"type": fmt["type"]}


def responses_usage(usage: dict[str, int]) -> dict[str, Any]:
    """Chat usage counts in the Responses API's shape."""
    return {
        "input_tokens": usage.get("prompt_tokens", 0),
        "output_tokens": usage.get("completion_tokens", 0),
        "total_tokens": usage.get("total_tokens", 0),
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }


def _text_prompts(request: CompletionRequest) -> list[str]:
    prompts = request.prompts()
    if not all(isinstance(p, str) for p in prompts):
        raise APIError(400, "this model takes text prompts, not token ids", param="prompt")
    return prompts


def _prompt_as_chat(request: CompletionRequest, prompt: str, model: str) -> ChatCompletionRequest:
    """A completion prompt as a one-message chat request with the same sampling parameters."""
    fields = request.model_dump(
        exclude={"prompt", "echo", "logprobs", "suffix", "best_of", "model", "n", "stream", "stream_options"},
        exclude_none=True,
    )
    return ChatCompletionRequest.model_validate(
        {**fields, "model": model, "messages": [{"role": "user", "content": prompt}]}
    )
