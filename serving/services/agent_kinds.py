"""One adapter per kind of agent, chosen once when the model loads (``kind_of``): how a chat request becomes
the agent's predict arguments, how its answer and its stream become chat completions, how it answers the
Responses API, and how its own /invocations body is read. ``AgentService`` holds the adapter and the
calling machinery; everything that depends on the agent's class is here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Optional, Protocol

from servelm.agents import (
    ChatAgent,
    ChatAgentChunk,
    ChatAgentRequest,
    ChatAgentResponse,
    ChatChoice,
    ChatChoiceDelta,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatContext,
    ChatModel,
    PythonModel,
    ResponsesAgent,
    ResponsesAgentRequest,
    ResponsesAgentResponse,
    ToolCallDelta,
    ToolCallFunctionDelta,
)
from servelm.agents.ids import new_id
from servelm.flavors.pyfunc.wrappers import plain

from ..conversions import (
    agent_messages_to_output_items,
    agent_response_to_chat,
    chat_to_agent_messages,
    chat_to_responses_input,
    chat_tools_to_responses,
    responses_output_to_chat_message,
    responses_to_agent_messages,
)
from ..responses_stream import ResponsesStreamBuilder
from .base import CHAT, COMPLETIONS, INVOCATIONS, RESPONSES, Capabilities

_CHATTY = Capabilities(frozenset({CHAT, COMPLETIONS, RESPONSES, INVOCATIONS}))


class AgentCaller(Protocol):
    """How an adapter calls the agent: ``call`` awaits predict (or apredict), ``stream`` iterates
    predict_stream (or apredict_stream); ``context`` is the PythonModelContext a ChatModel takes."""

    context: Any

    async def call(self, *args: Any) -> Any: ...

    def stream(self, *args: Any) -> AsyncIterator[Any]: ...


class AgentKind:
    """The plain PythonModel: /invocations only; base of the chat-speaking kinds."""

    kind = "python_function"
    base: type = PythonModel
    capabilities = Capabilities(frozenset({INVOCATIONS}))

    def chat_args(self, request: ChatCompletionRequest, caller: AgentCaller) -> tuple[Any, ...]:
        """The agent's predict arguments for a chat completions request."""
        raise NotImplementedError

    def invocation_args(self, data: dict[str, Any], caller: AgentCaller) -> tuple[Any, ...]:
        """The agent's predict arguments from its own /invocations body (as the pyfunc wrappers read it)."""
        raise NotImplementedError

    def chat_response(self, result: Any, model: str) -> ChatCompletionResponse:
        """The agent's answer as a chat completion."""
        raise NotImplementedError

    def chat_chunks(self, stream: AsyncIterator[Any]) -> AsyncIterator[ChatCompletionChunk]:
        """The agent's stream as chat completion chunks."""
        raise NotImplementedError

    async def responses(
        self, request: ResponsesAgentRequest, model: str, caller: AgentCaller
    ) -> Optional[dict[str, Any]]:
        """A Responses answer of the agent's own, or None to answer through chat completions."""
        return None

    def responses_stream(
        self, request: ResponsesAgentRequest, model: str, caller: AgentCaller, streams: bool
    ) -> Optional[AsyncIterator[dict[str, Any]]]:
        """A Responses event stream of the agent's own, or None to stream through chat completions."""
        return None


class ChatAgentKind(AgentKind):
    """MLflow's ChatAgent: messages, context and custom inputs in; messages (and chunks) out."""

    kind, base, capabilities = "agent/v2/chat", ChatAgent, _CHATTY

    def chat_args(self, request: ChatCompletionRequest, caller: AgentCaller) -> tuple[Any, ...]:
        return (chat_to_agent_messages(request.messages), chat_context(request), request.custom_inputs)

    def invocation_args(self, data: dict[str, Any], caller: AgentCaller) -> tuple[Any, ...]:
        request = ChatAgentRequest.model_validate(data)
        return (request.messages, request.context, request.custom_inputs)

    def chat_response(self, result: Any, model: str) -> ChatCompletionResponse:
        return agent_response_to_chat(_typed(result, ChatAgentResponse), model)

    async def chat_chunks(self, stream: AsyncIterator[Any]) -> AsyncIterator[ChatCompletionChunk]:
        """Text deltas, then tool calls (id and name first, arguments after); usage and custom outputs kept."""
        tool_index = 0
        async for raw in stream:
            chunk = raw if not isinstance(raw, dict) else ChatAgentChunk.model_validate(raw)
            delta = chunk.delta
            if delta.role == "tool":
                continue
            if delta.content:
                yield _chunk(
                    ChatChoiceDelta(content=delta.content), usage=chunk.usage, custom_outputs=chunk.custom_outputs
                )
            for call in delta.tool_calls or []:
                yield _tool_call_head(tool_index, call.id, call.function.name)
                if call.function.arguments:
                    yield _tool_arguments(tool_index, call.function.arguments)
                tool_index += 1
            if chunk.finish_reason or (
                not delta.content and not delta.tool_calls and (chunk.usage or chunk.custom_outputs)
            ):
                choices = (
                    [ChatChunkChoice(delta=ChatChoiceDelta(), finish_reason=chunk.finish_reason)]
                    if chunk.finish_reason
                    else []
                )
                yield ChatCompletionChunk(choices=choices, usage=chunk.usage, custom_outputs=chunk.custom_outputs)

    async def responses(
        self, request: ResponsesAgentRequest, model: str, caller: AgentCaller
    ) -> Optional[dict[str, Any]]:
        response = _typed(
            await caller.call(responses_to_agent_messages(request), request.context, request.custom_inputs),
            ChatAgentResponse,
        )
        builder = ResponsesStreamBuilder(model)
        builder.items = agent_messages_to_output_items(response.messages)
        builder.custom_outputs = response.custom_outputs
        return builder.response("completed", usage=None)


class ChatModelKind(AgentKind):
    """MLflow's ChatModel: its context, the messages and ChatParams in; a chat completion out."""

    kind, base, capabilities = "agent/v1/chat", ChatModel, _CHATTY

    def chat_args(self, request: ChatCompletionRequest, caller: AgentCaller) -> tuple[Any, ...]:
        return (caller.context, request.messages, request.params())

    def invocation_args(self, data: dict[str, Any], caller: AgentCaller) -> tuple[Any, ...]:
        chat = ChatCompletionRequest.model_validate(data)
        return (caller.context, chat.messages, chat.params())

    def chat_response(self, result: Any, model: str) -> ChatCompletionResponse:
        response = _typed(result, ChatCompletionResponse)
        response.model = model
        return response

    async def chat_chunks(self, stream: AsyncIterator[Any]) -> AsyncIterator[ChatCompletionChunk]:
        async for chunk in stream:
            yield _typed(chunk, ChatCompletionChunk)


class ResponsesAgentKind(AgentKind):
    """MLflow's ResponsesAgent: a Responses request in; output items (and Responses events) out."""

    kind, base, capabilities = "agent/v1/responses", ResponsesAgent, _CHATTY

    def chat_args(self, request: ChatCompletionRequest, caller: AgentCaller) -> tuple[Any, ...]:
        return (
            ResponsesAgentRequest(
                input=chat_to_responses_input(request.messages),
                tools=chat_tools_to_responses(request.tools),
                temperature=request.temperature,
                top_p=request.top_p,
                max_output_tokens=request.token_limit(),
                custom_inputs=request.custom_inputs,
                user=request.user,
            ),
        )

    def invocation_args(self, data: dict[str, Any], caller: AgentCaller) -> tuple[Any, ...]:
        return (ResponsesAgentRequest.model_validate(data),)

    def chat_response(self, result: Any, model: str) -> ChatCompletionResponse:
        response = _typed(result, ResponsesAgentResponse)
        message, finish = responses_output_to_chat_message([plain(i) for i in response.output])
        usage = None
        if response.usage is not None:
            usage = {
                "prompt_tokens": response.usage.input_tokens,
                "completion_tokens": response.usage.output_tokens,
                "total_tokens": response.usage.total_tokens,
            }
        return ChatCompletionResponse(
            model=model,
            choices=[ChatChoice(message=message, finish_reason=finish)],
            usage=usage,
            custom_outputs=response.custom_outputs,
        )

    async def chat_chunks(self, stream: AsyncIterator[Any]) -> AsyncIterator[ChatCompletionChunk]:
        """Text deltas, and function_call items as tool calls. A function call the agent answers itself (its
        ``function_call_output`` follows in the stream) is a step of the agent's, not a call for the client: calls
        are held until the stream ends, and only those left unanswered are sent."""
        pending: dict[str, dict[str, Any]] = {}  # call id -> function_call item, in order
        async for raw in stream:
            event = plain(raw)
            kind = event.get("type")
            item = event.get("item") or {}
            if kind == "response.output_text.delta" and event.get("delta"):
                yield _chunk(ChatChoiceDelta(content=event["delta"]), custom_outputs=event.get("custom_outputs"))
            elif kind == "response.output_item.done" and item.get("type") == "function_call":
                pending[item.get("call_id") or item.get("id") or new_id("call")] = item
            elif kind == "response.output_item.done" and item.get("type") == "function_call_output":
                pending.pop(str(item.get("call_id")), None)
            elif event.get("custom_outputs"):
                yield ChatCompletionChunk(choices=[], custom_outputs=event["custom_outputs"])
        for index, (call_id, item) in enumerate(pending.items()):
            yield _tool_call_head(index, call_id, item["name"])
            if item.get("arguments"):
                yield _tool_arguments(index, item["arguments"])

    async def responses(
        self, request: ResponsesAgentRequest, model: str, caller: AgentCaller
    ) -> Optional[dict[str, Any]]:
        body = _typed(await caller.call(request), ResponsesAgentResponse).model_dump(exclude_none=True)
        body["model"] = model
        body.setdefault("parallel_tool_calls", True)
        body.setdefault("tool_choice", "auto")
        body.setdefault("tools", [])
        return body

    def responses_stream(
        self, request: ResponsesAgentRequest, model: str, caller: AgentCaller, streams: bool
    ) -> Optional[AsyncIterator[dict[str, Any]]]:
        return (
            self._stream_events(request, model, caller) if streams else self._answer_as_events(request, model, caller)
        )

    async def _stream_events(
        self, request: ResponsesAgentRequest, model: str, caller: AgentCaller
    ) -> AsyncIterator[dict[str, Any]]:
        """The agent's own events, completed into the sequence the openai client expects."""
        builder = ResponsesStreamBuilder(model)
        for event in builder.start():
            yield event
        usage = None
        stream = caller.stream(request)
        try:
            async for raw in stream:
                event = plain(raw)
                if event.get("custom_outputs"):
                    builder.custom_outputs = event["custom_outputs"]
                kind = event.get("type", "")
                if kind == "response.output_text.delta":
                    out = builder.text_delta(event.get("item_id") or "msg", event.get("delta") or "")
                elif kind == "response.output_item.added":
                    out = builder.item_added(event.get("item") or {})
                elif kind == "response.output_item.done":
                    out = builder.item_done(event.get("item") or {})
                elif kind in ("response.created", "response.in_progress", "response.completed"):
                    usage = (event.get("response") or {}).get("usage") or usage
                    out = []
                elif kind in ("response.content_part.added", "response.content_part.done", "response.output_text.done"):
                    out = []  # the builder emits these itself, in the right order
                else:
                    out = builder.passthrough(event)
                for item in out:
                    yield item
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        for event in builder.finish(usage):
            yield event

    async def _answer_as_events(
        self, request: ResponsesAgentRequest, model: str, caller: AgentCaller
    ) -> AsyncIterator[dict[str, Any]]:
        """A non-streaming agent's answer as a Responses event stream."""
        builder = ResponsesStreamBuilder(model)
        response = await self.responses(request, model, caller)
        assert response is not None
        for event in builder.start():
            yield event
        for item in response["output"]:
            for event in builder.item_done(item):
                yield event
        builder.custom_outputs = response.get("custom_outputs")
        for event in builder.finish(response.get("usage")):
            yield event


def kind_of(agent: Any) -> AgentKind:
    """The adapter for a loaded model object, by its base class."""
    for kind in (ChatAgentKind, ChatModelKind, ResponsesAgentKind):
        if isinstance(agent, kind.base):
            return kind()
    return AgentKind()


def chat_context(request: ChatCompletionRequest) -> Optional[ChatContext]:
    """A ChatAgent's ``context`` from a chat completions request: a ``context`` body field
    (``{"conversation_id", "user_id"}``) when given, else ``metadata.conversation_id`` / ``metadata.user_id``,
    with ``user`` as the user id."""
    given = (request.model_extra or {}).get("context")
    if given is not None:
        return ChatContext.model_validate(given)
    metadata = request.metadata or {}
    conversation, user = metadata.get("conversation_id"), metadata.get("user_id") or request.user
    return ChatContext(conversation_id=conversation, user_id=user) if conversation or user else None


def _typed(obj: Any, cls: Any) -> Any:
    return obj if isinstance(obj, cls) else cls.model_validate(obj)


def _chunk(delta: ChatChoiceDelta, **fields: Any) -> ChatCompletionChunk:
    return ChatCompletionChunk(choices=[ChatChunkChoice(delta=delta)], **fields)


def _tool_call_head(index: int, call_id: str, name: str) -> ChatCompletionChunk:
    return _chunk(
        ChatChoiceDelta(
            tool_calls=[
                ToolCallDelta(
                    index=index, id=call_id, type="function", function=ToolCallFunctionDelta(name=name, arguments="")
                )
            ]
        )
    )


def _tool_arguments(index: int, arguments: str) -> ChatCompletionChunk:
    return _chunk(
        ChatChoiceDelta(tool_calls=[ToolCallDelta(index=index, function=ToolCallFunctionDelta(arguments=arguments))])
    )
