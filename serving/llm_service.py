"""``LLMService``: OpenAI chat completions (and, through the shared conversions, Responses and
/invocations) on top of a generation engine, with token usage and n choices."""

from __future__ import annotations

import asyncio
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
from servelm.flavors.generation import SamplingParams, sampling_params

from .errors import APIError, validation_error
from .metrics import ServerMetrics
from .service import ModelService
from .generation_engine import Delta, EngineRequest, GenerationEngine


class LLMService(ModelService):
    """Serves a causal LM through a GenerationEngine; ``encode_chat`` renders a request with the model's
    chat template and tokenizes it."""

    routes = frozenset({"chat", "responses", "invocations"})
    supports_n = True

    def __init__(self, engine: GenerationEngine, encode_chat: Callable[[ChatCompletionRequest], list[int]], kind: str = "llm/v1/chat",
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
        self.engine.start()

    async def stop(self) -> None:
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
        try:
            texts: list[list[str]] = [[] for _ in submitted]
            finals: list[Delta] = [Delta("", False)] * len(submitted)
            for i, req in enumerate(submitted):
                while True:
                    delta = await req.queue.get()
                    if delta.error:
                        raise APIError(400 if delta.finish_reason == "error" else 500, delta.error)
                    texts[i].append(delta.text)
                    if delta.finished:
                        finals[i] = delta
                        break
        finally:
            for req in submitted:
                self.engine.abort(req)
        completion = sum(d.completion_tokens for d in finals)
        self._count(completion)
        choices = [ChatChoice(index=i, message=ChatMessage(role="assistant", content="".join(t)), finish_reason=finals[i].finish_reason) for i, t in enumerate(texts)]
        return ChatCompletionResponse(model=model, choices=choices, usage=TokenUsageStats(prompt_tokens=prompt_len, completion_tokens=completion, total_tokens=prompt_len + completion))

    async def chat_stream(self, request: ChatCompletionRequest, model: str) -> AsyncIterator[ChatCompletionChunk]:
        prompt_len, submitted = self._submit(request)
        merged: asyncio.Queue[tuple[int, Delta]] = asyncio.Queue()
        pumps = [asyncio.get_running_loop().create_task(_pump(i, req, merged)) for i, req in enumerate(submitted)]
        completion = 0
        open_choices = len(submitted)
        try:
            while open_choices:
                index, delta = await merged.get()
                if delta.error:
                    raise APIError(500, delta.error)
                if delta.finished:
                    open_choices -= 1
                    completion += delta.completion_tokens
                if delta.text or delta.finished:
                    yield ChatCompletionChunk(model=model, choices=[ChatChunkChoice(index=index, delta=ChatChoiceDelta(content=delta.text or None),
                                                                                      finish_reason=delta.finish_reason if delta.finished else None)])
            self._count(completion)
            yield ChatCompletionChunk(model=model, usage=TokenUsageStats(prompt_tokens=prompt_len, completion_tokens=completion, total_tokens=prompt_len + completion))
        finally:
            for pump in pumps:
                pump.cancel()
            for req in submitted:
                self.engine.abort(req)

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
