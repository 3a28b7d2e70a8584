"""``AgentService``: serves a pyfunc model (ChatAgent, ChatModel, ResponsesAgent or plain PythonModel).

What depends on the agent's kind lives in its adapter (``agent_kinds.py``, chosen once at load); this
module calls the agent: sync agent code runs in a bounded thread pool, agents that override ``apredict``
/ ``apredict_stream`` are awaited on the event loop, and closing a stream early closes the agent's generator.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from servelm.agents import (
    ChatChoiceDelta,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    PythonModel,
    ResponsesAgentRequest,
    ToolCallDelta,
    ToolCallFunctionDelta,
)
from servelm.agents.python_model import iterate_in_thread, overrides
from servelm.flavors.pyfunc import PyFuncModel
from servelm.flavors.pyfunc.wrappers import plain

from .. import local_models, tracing
from ..errors import APIError
from ..local_models import CallScope, call_scope, open_scope
from .agent_kinds import kind_of
from .base import CHAT, RESPONSES, ModelService
from .dynamic_batching import DynamicBatcher, batch_key


class AgentService(ModelService):
    """Serves a loaded pyfunc model on the endpoints its kind supports (conversions fill the rest)."""

    operation = "invoke_agent"

    def __init__(self, model: PyFuncModel, max_threads: int = 32):
        self.model = model
        # Sync agent code runs here; the pool's size bounds the threads (asyncio's executor hop is
        # cheaper per call than anyio's to_thread, which matters for fast agents).
        self.pool = ThreadPoolExecutor(max_threads, thread_name_prefix="servelm-agent")
        try:
            self.agent: Any = model.served_model()
        except Exception:
            self.agent = None
        self.adapter = kind_of(self.agent)
        self.kind, self.capabilities = self.adapter.kind, self.adapter.capabilities
        if self.adapter.base is PythonModel:
            self.operation = "predict"  # a model, not an agent: its request span is "predict NAME"
        self.context = getattr(model._impl, "context", None)  # the PythonModelContext a ChatModel takes
        # Which methods the agent implements itself: fixed for its class, so decided once here.
        agent, base = self.agent, self.adapter.base
        self._native = {
            name: agent is not None and overrides(agent, base, name)
            for name in ("predict_stream", "apredict", "apredict_stream")
        }
        self._streams = self._native["predict_stream"] or self._native["apredict_stream"]
        self._span_attributes = {
            tracing.OPERATION: "invoke_agent",
            "gen_ai.agent.name": type(agent).__name__ if agent is not None else "model",
            "servelm.agent.kind": self.kind,
        }
        self.batcher: Optional[DynamicBatcher] = None
        size = getattr(agent, "max_batch_size", None) if agent is not None else None
        if size and int(size) > 1:
            self.batcher = DynamicBatcher(
                self._predict_batch, int(size), float(getattr(agent, "batch_timeout_ms", 5.0)) / 1000.0
            )

    # ------------------------------------------------------------------ calling the agent (the adapters' AgentCaller)
    async def call(self, *args: Any) -> Any:
        """The agent's predict (apredict on the loop when it has one), in a scope of its own: the LLM calls it makes
        in process end with it. Traced, a ``predict`` span around it."""
        if tracing.tracer() is None and not local_models.in_use():  # the plain path: nothing to carry
            if self._native["apredict"]:
                return await self.agent.apredict(*args)
            return await asyncio.get_running_loop().run_in_executor(self.pool, self.agent.predict, *args)
        span = tracing.start_span("predict", self._span_attributes) if tracing.tracer() is not None else None
        try:
            with tracing.attached(tracing.context_with(span) if span is not None else None):
                if self._native["apredict"]:
                    scope = CallScope()
                    token = call_scope.set(scope)
                    try:
                        return await self.agent.apredict(*args)
                    finally:
                        call_scope.reset(token)
                        scope.close()
                return await self._in_thread(self.agent.predict, *args)
        except BaseException as exc:
            tracing.fail(span, exc)
            raise
        finally:
            if span is not None:
                span.end()

    async def stream(self, *args: Any) -> AsyncIterator[Any]:
        """The agent's predict_stream (apredict_stream on the loop when it has one), every step in the agent
        request's scope (its in-process LLM calls end with the stream) and, traced, under a ``predict_stream`` span."""
        if tracing.tracer() is None and not local_models.in_use():  # the plain path: nothing to carry
            if self._native["apredict_stream"]:
                iterator = self.agent.apredict_stream(*args)
                try:
                    async for item in iterator:
                        yield item
                finally:
                    await iterator.aclose()
                return
            generator = await asyncio.get_running_loop().run_in_executor(self.pool, self.agent.predict_stream, *args)
            async for item in iterate_in_thread(generator, self.pool):
                yield item
            return
        span = tracing.start_span("predict_stream", self._span_attributes) if tracing.tracer() is not None else None
        span_context = tracing.context_with(span) if span is not None else None
        scope, ctx = open_scope(span_context)
        try:
            if self._native["apredict_stream"]:
                iterator = self.agent.apredict_stream(*args)
                try:
                    while True:
                        with tracing.attached(span_context):
                            token = call_scope.set(scope)
                            try:
                                item = await iterator.__anext__()
                            except StopAsyncIteration:
                                return
                            finally:
                                call_scope.reset(token)
                        yield item
                finally:
                    await iterator.aclose()
                return
            generator = await asyncio.get_running_loop().run_in_executor(
                self.pool, ctx.run, self.agent.predict_stream, *args
            )
            async for item in iterate_in_thread(generator, self.pool, ctx):
                yield item
        except BaseException as exc:
            tracing.fail(span, exc)
            raise
        finally:
            scope.close()
            if span is not None:
                span.end()

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        """Run blocking ``fn(*args)`` in the agent pool, in a copy of this context with a scope of its own (the
        LLM calls it makes in process are cancelled when it ends); a cancelled caller abandons the thread (it
        finishes), its LLM calls cancelled."""
        if tracing.tracer() is None and not local_models.in_use():
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        scope, ctx = open_scope()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, ctx.run, fn, *args)
        finally:
            scope.close()

    # ------------------------------------------------------------------ chat completions
    async def chat(self, request: ChatCompletionRequest, model: str) -> ChatCompletionResponse:
        self.require(CHAT)
        return self.adapter.chat_response(await self.call(*self.adapter.chat_args(request, self)), model)

    async def chat_stream(self, request: ChatCompletionRequest, model: str) -> AsyncIterator[ChatCompletionChunk]:
        self.require(CHAT)
        if not self._streams:
            response = await self.chat(request, model)
            choice = response.choices[0]
            calls = [
                ToolCallDelta(
                    index=i,
                    id=c.id,
                    type="function",
                    function=ToolCallFunctionDelta(name=c.function.name, arguments=c.function.arguments),
                )
                for i, c in enumerate(choice.message.tool_calls or [])
            ]
            delta = ChatChoiceDelta(content=choice.message.text() or None, tool_calls=calls or None)
            yield ChatCompletionChunk(
                choices=[ChatChunkChoice(delta=delta, finish_reason=choice.finish_reason)],
                usage=response.usage,
                custom_outputs=response.custom_outputs,
            )
            return
        stream = self.stream(*self.adapter.chat_args(request, self))
        try:
            async for chunk in self.adapter.chat_chunks(stream):
                yield chunk
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ responses
    async def responses(self, request: ResponsesAgentRequest, model: str) -> dict[str, Any]:
        self.require(RESPONSES)
        own = await self.adapter.responses(request, model, self)
        return own if own is not None else await super().responses(request, model)

    async def responses_stream(self, request: ResponsesAgentRequest, model: str) -> AsyncIterator[dict[str, Any]]:
        self.require(RESPONSES)
        events = self.adapter.responses_stream(request, model, self, self._streams) or super().responses_stream(
            request, model
        )
        async for event in events:
            yield event

    # ------------------------------------------------------------------ /invocations
    async def invoke(self, data: Any, params: Optional[dict[str, Any]]) -> Any:
        if self.adapter.base is not PythonModel and isinstance(data, dict):
            # An agent's own request body: call it directly, so async agents stay on the event loop.
            return plain(await self.call(*self.adapter.invocation_args(data, self)))
        if self.batcher is not None and not params and batch_key(data) is not None:
            return await self.batcher.submit(data)
        return await self._in_thread(self.model.predict, data, params)

    async def invoke_stream(self, data: Any, params: Optional[dict[str, Any]]) -> AsyncIterator[Any]:
        if self.adapter.base is not PythonModel and isinstance(data, dict):
            if not self._streams:
                raise APIError(
                    400,
                    "this agent cannot stream: it implements neither predict_stream nor apredict_stream",
                    param="stream",
                    code="stream_unsupported",
                )
            stream = self.stream(*self.adapter.invocation_args(data, self))
            try:
                async for item in stream:
                    yield plain(item)
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
            return
        if not self.model.metadata.flavors.get("python_function", {}).get("streamable"):
            raise APIError(
                400,
                "this model cannot stream: its predict_stream is not implemented",
                param="stream",
                code="stream_unsupported",
            )
        scope, ctx = open_scope()
        try:
            generator = await asyncio.get_running_loop().run_in_executor(
                self.pool, ctx.run, self.model.predict_stream, data, params
            )
            async for item in iterate_in_thread(generator, self.pool, ctx):
                yield item
        finally:
            scope.close()

    async def _predict_batch(self, rows: Any) -> Any:
        out = await self._in_thread(self.model.predict, rows, None)
        return out if hasattr(out, "__len__") and hasattr(out, "__getitem__") else list(out)  # sliced per request


__all__ = ["AgentService"]
