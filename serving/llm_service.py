"""``LLMService``: OpenAI chat completions (and, through the shared conversions, Responses and
/invocations) on top of a generation engine, with token usage and n choices."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Callable, Optional

from pydantic import ValidationError

from servelm.agents import (
    ChatChoice,
    ChatChoiceDelta,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    TokenUsageStats,
)
from servelm.agents.ids import new_id, now_seconds
from servelm.flavors.generation import SamplingParams, sampling_params

from .errors import APIError, validation_error
from .metrics import ServerMetrics
from .service import ModelService
from .generation_engine import Delta, EngineRequest


class LLMService(ModelService):
    """Serves a causal LM through a GenerationEngine; ``encode_chat`` renders a request with the model's
    chat template and tokenizes it."""

    routes = frozenset({"chat", "responses", "invocations"})
    supports_n = True

    def __init__(self, engine: Any, encode_chat: Callable[[ChatCompletionRequest], list[int]], kind: str = "llm/v1/chat",
                 defaults: Optional[dict[str, Any]] = None):
        self.engine = engine
        self.encode_chat = encode_chat
        self.kind = kind
        self.defaults = defaults or {}
        self.metrics: Optional[ServerMetrics] = None

    def bind_metrics(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics
        self.engine.on_step = metrics.batch_size.observe

    async def start(self) -> None:
        if asyncio.iscoroutinefunction(self.engine.start):
            await self.engine.start()
        else:
            await asyncio.to_thread(self.engine.start)  # may load the model: keep /health answering meanwhile

    def health_error(self) -> Optional[str]:
        check = getattr(self.engine, "health_error", None)
        return check() if check is not None else None

    async def stop(self) -> None:
        if asyncio.iscoroutinefunction(self.engine.stop):
            await self.engine.stop()
        else:
            await asyncio.to_thread(self.engine.stop)

    # ------------------------------------------------------------------ requests -> engine
    def _submit(self, request: ChatCompletionRequest) -> tuple[int, list[EngineRequest]]:
        try:
            ids = self.encode_chat(request)
        except Exception as exc:
            raise APIError(400, f"messages could not be rendered with the model's chat template: {exc}", param="messages") from None
        if len(ids) >= self.engine.context_length:
            raise APIError(400, f"the prompt has {len(ids)} tokens; this model's context is {self.engine.context_length}", param="messages", code="context_length_exceeded")
        params = sampling_params(request, len(ids), self.engine.context_length, self.defaults)
        submitted = []
        for choice in range(request.n or 1):
            seeded = params if params.seed is None else SamplingParams(**{**params.__dict__, "seed": params.seed + choice})
            submitted.append(self.engine.submit(ids, seeded))
        if self.metrics is not None:
            self.metrics.prompt_tokens.inc(len(ids))
        return len(ids), submitted

    def _count(self, tokens: int) -> None:
        if self.metrics is not None and tokens:
            self.metrics.generation_tokens.inc(tokens)

    async def chat(self, request: ChatCompletionRequest, model: str) -> ChatCompletionResponse:
        prompt_len, submitted = self._submit(request)
        texts: list[list[str]] = [[] for _ in submitted]
        finals: list[Delta] = [Delta("", False)] * len(submitted)

        async def collect(i: int, req: EngineRequest) -> None:
            while True:
                delta = await req.queue.get()
                if delta.error:
                    raise APIError(400 if delta.finish_reason == "error" else 500, delta.error)
                texts[i].append(delta.text)
                if delta.finished:
                    finals[i] = delta
                    return

        try:
            if len(submitted) == 1:
                await collect(0, submitted[0])
            else:  # the choices' queues are read together (an engine may produce only as they are read)
                await asyncio.gather(*(collect(i, req) for i, req in enumerate(submitted)))
        finally:
            for req in submitted:
                self.engine.abort(req)
        completion = sum(d.completion_tokens for d in finals)
        self._count(completion)
        choices = [ChatChoice(index=i, message=ChatMessage(role="assistant", content="".join(t)), finish_reason=finals[i].finish_reason) for i, t in enumerate(texts)]
        return ChatCompletionResponse(model=model, choices=choices, usage=TokenUsageStats(prompt_tokens=prompt_len, completion_tokens=completion, total_tokens=prompt_len + completion))

    async def _stream_deltas(self, request: ChatCompletionRequest) -> AsyncIterator[tuple[int, str, bool, Optional[str], int]]:
        """(choice index, text, finished, finish_reason, tokens) as generated, then a last
        (-1, "", True, None, prompt tokens) item. When the client reads slower than the engine produces,
        the deltas waiting for a choice come out joined (as vLLM does), so a busy server spends its time
        generating rather than framing one event per token."""
        prompt_len, submitted = self._submit(request)
        merged: asyncio.Queue[tuple[int, Delta]]
        pumps: list[asyncio.Task[None]] = []
        if len(submitted) == 1:
            merged = _IndexedQueue(submitted[0].queue)  # type: ignore[assignment]
        else:
            merged = asyncio.Queue()
            pumps = [asyncio.get_running_loop().create_task(_pump(i, req, merged)) for i, req in enumerate(submitted)]
        completion = 0
        open_choices = len(submitted)
        try:
            while open_choices:
                ready = [await merged.get()]
                while not merged.empty():
                    ready.append(merged.get_nowait())
                for item in _coalesce(ready):
                    if item[2]:
                        open_choices -= 1
                        completion += item[4]
                    if item[1] or item[2]:
                        yield item
            self._count(completion)
            yield -1, "", True, None, prompt_len
        finally:
            for pump in pumps:
                pump.cancel()
            for req in submitted:
                self.engine.abort(req)

    async def chat_stream(self, request: ChatCompletionRequest, model: str) -> AsyncIterator[ChatCompletionChunk]:
        completion = 0
        async for index, text, finished, finish_reason, tokens in self._stream_deltas(request):
            if index < 0:
                yield ChatCompletionChunk(model=model, usage=TokenUsageStats(prompt_tokens=tokens, completion_tokens=completion, total_tokens=tokens + completion))
                return
            completion += tokens if finished else 0
            yield ChatCompletionChunk.model_construct(  # trusted values: no validation, no fresh id per chunk
                id="", object="chat.completion.chunk", created=0, model=model, usage=None, custom_outputs=None,
                choices=[ChatChunkChoice.model_construct(index=index, delta=ChatChoiceDelta.model_construct(content=text or None),
                                                         finish_reason=finish_reason if finished else None, logprobs=None)])

    async def openai_chat_events(self, request: ChatCompletionRequest, model: str, include_usage: bool) -> AsyncIterator[str]:
        """The chat stream as OpenAI sends it, already JSON-encoded: one id and created, the role with
        each choice's first content, a finish_reason chunk per choice, the usage chunk when asked for.
        (The generic path through pydantic chunks costs more per token than generating one.)"""
        head = f'{{"id":"{new_id("chatcmpl")}","object":"chat.completion.chunk","created":{now_seconds()},"model":{json.dumps(model)},"choices":'
        started: set[int] = set()
        completion = 0
        async for index, text, finished, finish_reason, tokens in self._stream_deltas(request):
            if index < 0:
                if include_usage:
                    usage = {"prompt_tokens": tokens, "completion_tokens": completion, "total_tokens": tokens + completion}
                    yield head + "[]," + f'"usage":{json.dumps(usage, separators=(",", ":"))}}}'
                return
            first = index not in started
            delta: dict[str, Any] = {"role": "assistant"} if first else {}
            started.add(index)
            if text or first:
                delta["content"] = text
            if finished:
                completion += tokens
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason if finished else None}
            yield head + json.dumps([choice], separators=(",", ":")) + "}"

    async def invoke(self, data: Any, params: Optional[dict[str, Any]]) -> Any:
        bodies = data if isinstance(data, list) else [data]
        try:
            chats = [ChatCompletionRequest.model_validate({**b, **(params or {})}) for b in bodies]
        except ValidationError as exc:
            raise validation_error(exc) from None
        except TypeError:
            raise APIError(400, "this model takes chat requests: {'messages': [...]} (or a list of them)") from None
        answers = await asyncio.gather(*(self.chat(c, c.model or "model") for c in chats))
        dumped = [a.model_dump(exclude_none=True) for a in answers]
        return dumped if isinstance(data, list) else dumped[0]

    async def invoke_stream(self, data: Any, params: Optional[dict[str, Any]]) -> AsyncIterator[Any]:
        chat = ChatCompletionRequest.model_validate({**data, **(params or {})})
        async for chunk in self.chat_stream(chat, chat.model or "model"):
            yield chunk.model_dump(exclude_none=True)


async def _pump(index: int, request: EngineRequest, merged: "asyncio.Queue[tuple[int, Delta]]") -> None:
    while True:
        delta = await request.queue.get()
        merged.put_nowait((index, delta))
        if delta.finished:
            return


class _IndexedQueue:
    """One request's Delta queue seen as (choice 0, Delta) items, without a pump task."""

    def __init__(self, queue: "asyncio.Queue[Delta]"):
        self.queue = queue

    async def get(self) -> tuple[int, Delta]:
        return 0, await self.queue.get()

    def get_nowait(self) -> tuple[int, Delta]:
        return 0, self.queue.get_nowait()

    def empty(self) -> bool:
        return self.queue.empty()


def _coalesce(ready: list[tuple[int, Delta]]) -> list[tuple[int, str, bool, Optional[str], int]]:
    """Join the waiting deltas of each choice: (index, text, finished, finish_reason, tokens), in order
    of each choice's first delta. An error stops everything (raised as a 500)."""
    joined: dict[int, list[Any]] = {}
    for index, delta in ready:
        if delta.error:
            raise APIError(500, delta.error)
        entry = joined.setdefault(index, [[], False, None, 0])
        entry[0].append(delta.text)
        if delta.finished:
            entry[1], entry[2], entry[3] = True, delta.finish_reason, delta.completion_tokens
    return [(index, "".join(texts), finished, reason, tokens) for index, (texts, finished, reason, tokens) in joined.items()]
