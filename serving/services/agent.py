"""``AgentService``: serves a pyfunc model (ChatAgent, ChatModel, ResponsesAgent or plain PythonModel).

Sync agent code runs in a bounded thread pool; agents that override ``apredict`` / ``apredict_stream``
are awaited on the event loop. Closing a stream early closes the agent's generator.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Optional

import asyncio
from concurrent.futures import ThreadPoolExecutor

from servelm.agents import (
    ChatAgent,
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
from servelm.agents.python_model import iterate_in_thread, overrides
from servelm.flavors.pyfunc import PyFuncModel
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
from ..errors import APIError
from ..responses_stream import ResponsesStreamBuilder
from .base import CHAT, COMPLETIONS, INVOCATIONS, RESPONSES, Capabilities, ModelService
from .dynamic_batching import DynamicBatcher


_CHATTY = Capabilities(frozenset({CHAT, COMPLETIONS, RESPONSES, INVOCATIONS}))


class AgentService(ModelService):
    """Serves a loaded pyfunc model on the endpoints its kind supports (conversions fill the rest)."""

    def __init__(self, model: PyFuncModel, max_threads: int = 32):
        self.model = model
        # Sync agent code runs here; the pool's size bounds the threads (asyncio's executor hop is
        # cheaper per call than anyio's to_thread, which matters for fast agents).
        self.pool = ThreadPoolExecutor(max_threads, thread_name_prefix="servelm-agent")
        try:
            self.agent: Any = model.served_model()
        except Exception:
            self.agent = None
        agent = self.agent
        if isinstance(agent, ChatAgent):
            self.base: type = ChatAgent
            self.kind, self.capabilities = "agent/v2/chat", _CHATTY
        elif isinstance(agent, ChatModel):
            self.base = ChatModel
            self.kind, self.capabilities = "agent/v1/chat", _CHATTY
        elif isinstance(agent, ResponsesAgent):
            self.base = ResponsesAgent
            self.kind, self.capabilities = "agent/v1/responses", _CHATTY
        else:
            self.base = PythonModel
            self.kind, self.capabilities = "python_function", Capabilities(frozenset({INVOCATIONS}))
        # Which methods the agent implements itself: fixed for its class, so decided once here.
        self._native = {name: agent is not None and overrides(agent, self.base, name) for name in ("predict_stream", "apredict", "apredict_stream")}
        self._streams = self._native["predict_stream"] or self._native["apredict_stream"]
        self.batcher: Optional[DynamicBatcher] = None
        size = getattr(agent, "max_batch_size", None) if agent is not None else None
        if size and int(size) > 1:
            self.batcher = DynamicBatcher(self._predict_batch, int(size), float(getattr(agent, "batch_timeout_ms", 5.0)) / 1000.0)

    # ------------------------------------------------------------------ calling the agent
    async def _call(self, *args: Any) -> Any:
        if self._native["apredict"]:
            return await self.agent.apredict(*args)
        return await self._in_thread(self.agent.predict, *args)

    async def _stream(self, *args: Any) -> AsyncIterator[Any]:
        if self._native["apredict_stream"]:
            iterator = self.agent.apredict_stream(*args)
            try:
                async for item in iterator:
                    yield item
            finally:
                await iterator.aclose()
            return
        generator = await self._in_thread(self.agent.predict_stream, *args)
        async for item in iterate_in_thread(generator, self.pool):
            yield item

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _in_thread(self, fn: Any, *args: Any) -> "asyncio.Future[Any]":
        """Run blocking ``fn(*args)`` in the agent pool; a cancelled caller abandons it (the thread finishes)."""
        return asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def _agent_args(self, request: ChatCompletionRequest) -> tuple[Any, ...]:
        if isinstance(self.agent, ChatAgent):
            return (chat_to_agent_messages(request.messages), chat_context(request), request.custom_inputs)
        if isinstance(self.agent, ChatModel):
            return (self.model_context(), request.messages, request.params())
        return (self._responses_request(request),)

    def model_context(self) -> Any:
        return getattr(self.model._impl, "context", None)

    def _responses_request(self, request: ChatCompletionRequest) -> ResponsesAgentRequest:
        return ResponsesAgentRequest(input=chat_to_responses_input(request.messages), tools=chat_tools_to_responses(request.tools),
                                     temperature=request.temperature, top_p=request.top_p, max_output_tokens=request.token_limit(),
                                     custom_inputs=request.custom_inputs, user=request.user)

    # ------------------------------------------------------------------ chat completions
    async def chat(self, request: ChatCompletionRequest, model: str) -> ChatCompletionResponse:
        self.require(CHAT)
        result = await self._call(*self._agent_args(request))
        if isinstance(self.agent, ChatAgent):
            return agent_response_to_chat(_typed(result, ChatAgentResponse), model)
        if isinstance(self.agent, ChatModel):
            response = _typed(result, ChatCompletionResponse)
            response.model = model
            return response
        response = _typed(result, ResponsesAgentResponse)
        message, finish = responses_output_to_chat_message([plain(i) for i in response.output])
        usage = None
        if response.usage is not None:
            usage = {"prompt_tokens": response.usage.input_tokens, "completion_tokens": response.usage.output_tokens, "total_tokens": response.usage.total_tokens}
        return ChatCompletionResponse(model=model, choices=[ChatChoice(message=message, finish_reason=finish)], usage=usage, custom_outputs=response.custom_outputs)

    async def chat_stream(self, request: ChatCompletionRequest, model: str) -> AsyncIterator[ChatCompletionChunk]:
        self.require(CHAT)
        if not self._streams:
            response = await self.chat(request, model)
            choice = response.choices[0]
            calls = [ToolCallDelta(index=i, id=c.id, type="function", function=ToolCallFunctionDelta(name=c.function.name, arguments=c.function.arguments))
                     for i, c in enumerate(choice.message.tool_calls or [])]
            yield ChatCompletionChunk(choices=[ChatChunkChoice(delta=ChatChoiceDelta(content=choice.message.text() or None, tool_calls=calls or None), finish_reason=choice.finish_reason)],
                                      usage=response.usage, custom_outputs=response.custom_outputs)
            return
        convert = _chat_chunks_from_agent if isinstance(self.agent, ChatAgent) else _chat_chunks_from_events if isinstance(self.agent, ResponsesAgent) else None
        stream = self._stream(*self._agent_args(request))
        try:
            if convert is None:
                async for chunk in stream:
                    yield _typed(chunk, ChatCompletionChunk)
            else:
                async for chunk in convert(stream):
                    yield chunk
        finally:
            await stream.aclose()

    # ------------------------------------------------------------------ responses
    async def responses(self, request: ResponsesAgentRequest, model: str) -> dict[str, Any]:
        self.require(RESPONSES)
        if isinstance(self.agent, ResponsesAgent):
            body = _typed(await self._call(request), ResponsesAgentResponse).model_dump(exclude_none=True)
            body["model"] = model
            body.setdefault("parallel_tool_calls", True)
            body.setdefault("tool_choice", "auto")
            body.setdefault("tools", [])
            return body
        if isinstance(self.agent, ChatAgent):
            response = _typed(await self._call(responses_to_agent_messages(request), request.context, request.custom_inputs), ChatAgentResponse)
            builder = ResponsesStreamBuilder(model)
            builder.items = agent_messages_to_output_items(response.messages)
            builder.custom_outputs = response.custom_outputs
            return builder.response("completed", usage=None)
        return await super().responses(request, model)

    async def responses_stream(self, request: ResponsesAgentRequest, model: str) -> AsyncIterator[dict[str, Any]]:
        self.require(RESPONSES)
        if isinstance(self.agent, ResponsesAgent) and self._streams:
            builder = ResponsesStreamBuilder(model)
            for event in builder.start():
                yield event
            usage = None
            stream = self._stream(request)
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
                await stream.aclose()
            for event in builder.finish(usage):
                yield event
            return
        if isinstance(self.agent, ResponsesAgent):
            builder = ResponsesStreamBuilder(model)
            response = await self.responses(request, model)
            for event in builder.start():
                yield event
            for item in response["output"]:
                for event in builder.item_done(item):
                    yield event
            builder.custom_outputs = response.get("custom_outputs")
            for event in builder.finish(response.get("usage")):
                yield event
            return
        async for event in super().responses_stream(request, model):
            yield event

    # ------------------------------------------------------------------ /invocations
    async def invoke(self, data: Any, params: Optional[dict[str, Any]]) -> Any:
        if self.base is not PythonModel and isinstance(data, dict):
            # An agent's own request body: call it directly, so async agents stay on the event loop.
            return plain(await self._call(*self._invocation_args(data)))
        if self.batcher is not None and isinstance(data, list) and not params:
            return await self.batcher.submit(data)
        return await self._in_thread(self.model.predict, data, params)

    async def invoke_stream(self, data: Any, params: Optional[dict[str, Any]]) -> AsyncIterator[Any]:
        if self.base is not PythonModel and isinstance(data, dict):
            if not self._streams:
                raise APIError(400, "this agent cannot stream: it implements neither predict_stream nor apredict_stream", param="stream", code="stream_unsupported")
            stream = self._stream(*self._invocation_args(data))
            try:
                async for item in stream:
                    yield plain(item)
            finally:
                await stream.aclose()
            return
        if not self.model.metadata.flavors.get("python_function", {}).get("streamable"):
            raise APIError(400, "this model cannot stream: its predict_stream is not implemented", param="stream", code="stream_unsupported")
        generator = await self._in_thread(self.model.predict_stream, data, params)
        async for item in iterate_in_thread(generator, self.pool):
            yield item

    def _invocation_args(self, data: dict[str, Any]) -> tuple[Any, ...]:
        """The agent's predict arguments from its raw /invocations body (the same parsing as the pyfunc wrappers)."""
        if isinstance(self.agent, ChatAgent):
            request = ChatAgentRequest.model_validate(data)
            return (request.messages, request.context, request.custom_inputs)
        if isinstance(self.agent, ChatModel):
            chat = ChatCompletionRequest.model_validate(data)
            return (self.model_context(), chat.messages, chat.params())
        return (ResponsesAgentRequest.model_validate(data),)

    async def _predict_batch(self, rows: list[Any]) -> list[Any]:
        return list(await self._in_thread(self.model.predict, rows, None))



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


def _typed(obj: Any, cls: type) -> Any:
    return obj if isinstance(obj, cls) else cls.model_validate(obj)


async def _chat_chunks_from_agent(stream: AsyncIterator[Any]) -> AsyncIterator[ChatCompletionChunk]:
    """ChatAgent chunks as chat chunks: text deltas, then tool calls (id/name first, arguments after)."""
    tool_index = 0
    async for raw in stream:
        chunk = raw if not isinstance(raw, dict) else _chat_agent_chunk(raw)
        delta = chunk.delta
        if delta.role == "tool":
            continue
        if delta.content:
            yield ChatCompletionChunk(choices=[ChatChunkChoice(delta=ChatChoiceDelta(content=delta.content))], usage=chunk.usage, custom_outputs=chunk.custom_outputs)
        for call in delta.tool_calls or []:
            yield _tool_call_head(tool_index, call.id, call.function.name)
            if call.function.arguments:
                yield ChatCompletionChunk(choices=[ChatChunkChoice(delta=ChatChoiceDelta(tool_calls=[ToolCallDelta(index=tool_index, function=ToolCallFunctionDelta(arguments=call.function.arguments))]))])
            tool_index += 1
        if chunk.finish_reason or (not delta.content and not delta.tool_calls and (chunk.usage or chunk.custom_outputs)):
            yield ChatCompletionChunk(choices=[ChatChunkChoice(delta=ChatChoiceDelta(), finish_reason=chunk.finish_reason)] if chunk.finish_reason else [],
                                      usage=chunk.usage, custom_outputs=chunk.custom_outputs)


def _chat_agent_chunk(raw: dict[str, Any]) -> Any:
    from servelm.agents import ChatAgentChunk

    return ChatAgentChunk.model_validate(raw)


def _tool_call_head(index: int, call_id: str, name: str) -> ChatCompletionChunk:
    return ChatCompletionChunk(choices=[ChatChunkChoice(delta=ChatChoiceDelta(tool_calls=[ToolCallDelta(index=index, id=call_id, type="function", function=ToolCallFunctionDelta(name=name, arguments=""))]))])


async def _chat_chunks_from_events(stream: AsyncIterator[Any]) -> AsyncIterator[ChatCompletionChunk]:
    """Responses events as chat chunks: text deltas, and function_call items as tool calls."""
    tool_index = 0
    async for raw in stream:
        event = plain(raw)
        kind = event.get("type")
        if kind == "response.output_text.delta" and event.get("delta"):
            yield ChatCompletionChunk(choices=[ChatChunkChoice(delta=ChatChoiceDelta(content=event["delta"]))], custom_outputs=event.get("custom_outputs"))
        elif kind == "response.output_item.done" and (event.get("item") or {}).get("type") == "function_call":
            item = event["item"]
            yield _tool_call_head(tool_index, item.get("call_id") or item.get("id"), item["name"])
            if item.get("arguments"):
                yield ChatCompletionChunk(choices=[ChatChunkChoice(delta=ChatChoiceDelta(tool_calls=[ToolCallDelta(index=tool_index, function=ToolCallFunctionDelta(arguments=item["arguments"]))]))])
            tool_index += 1
        elif event.get("custom_outputs"):
            yield ChatCompletionChunk(choices=[], custom_outputs=event["custom_outputs"])


__all__ = ["AgentService"]
