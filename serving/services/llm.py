"""``LLMService``: OpenAI chat and text completions (and, through the shared conversions, Responses and
/invocations) on top of an ``Engine``, with token usage and n choices.

Everything that can be checked before generating (the prompt renders and fits, ``max_tokens`` fits
beside it) is checked when a request is prepared, so the routes refuse it before any response bytes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator, Callable, Optional, Union

from pydantic import ValidationError

from servelm.agents import (
    ChatChoice,
    ChatChoiceDelta,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ChatParams,
    CompletionRequest,
    TokenUsageStats,
)
from servelm.agents.ids import new_id, now_seconds
from servelm.flavors.generation import SamplingParams, sampling_params

from ..engines.base import Delta, Engine, RequestStream
from ..errors import APIError, validation_error
from ..framing import ChatChunkFramer, CompletionChunkFramer
from ..logs import note_usage
from ..metrics import ServerMetrics
from .base import CHAT, COMPLETIONS, INVOCATIONS, RESPONSES, Capabilities, ModelService

#: (choice index, text, finished, finish_reason, completion tokens); index -1 ends the stream with the prompt tokens
Piece = tuple[int, str, bool, Optional[str], int]


@dataclass
class Generation:
    """A request ready for the engine: the prompt's token ids and each choice's SamplingParams."""

    prompt_ids: list[int]
    choices: list[SamplingParams]


class LLMService(ModelService):
    """Serves a causal LM through an ``Engine``. ``encode_chat`` renders a chat request with the model's
    chat template and tokenizes it; ``encode_text`` tokenizes a plain prompt (special tokens added)."""

    capabilities = Capabilities(frozenset({CHAT, COMPLETIONS, RESPONSES, INVOCATIONS}), n=True)

    def __init__(self, engine: Engine, encode_chat: Callable[[ChatCompletionRequest], list[int]], kind: str = "llm/v1/chat",
                 defaults: Optional[dict[str, Any]] = None, metrics: Optional[ServerMetrics] = None,
                 encode_text: Optional[Callable[[str], list[int]]] = None):
        self.engine = engine
        self.encode_chat = encode_chat
        self.encode_text = encode_text
        self.kind = kind
        self.defaults = defaults or {}
        self.metrics = metrics

    async def start(self) -> None:
        await self.engine.start()

    def health_error(self) -> Optional[str]:
        return self.engine.health_error()

    async def stop(self) -> None:
        await self.engine.stop()

    # ------------------------------------------------------------------ requests -> generations
    def prepare_chat(self, request: ChatCompletionRequest) -> Generation:
        """The chat request's prompt ids and sampling parameters; a 400 naming the field when it cannot run."""
        try:
            ids = self.encode_chat(request)
        except Exception as exc:
            raise APIError(400, f"messages could not be rendered with the model's chat template: {exc}", param="messages") from None
        return self._generation(ids, request, "messages")

    def prepare_text(self, request: CompletionRequest) -> list[Generation]:
        """One Generation per prompt of a completions request (texts tokenized, token ids taken as they are)."""
        generations = []
        for prompt in request.prompts():
            if isinstance(prompt, str):
                if self.encode_text is None:
                    raise APIError(400, "this model takes chat requests only", param="prompt")
                ids = self.encode_text(prompt)
            else:
                ids = list(prompt)
            if not ids:
                raise APIError(400, "the prompt is empty", param="prompt")
            limited = request if request.token_limit() is not None else request.model_copy(update={"max_tokens": 16})  # OpenAI's default
            generations.append(self._generation(ids, limited, "prompt"))
        return generations

    def _generation(self, ids: list[int], request: ChatParams, prompt_field: str) -> Generation:
        context = self.engine.context_length
        if len(ids) >= context:
            raise APIError(400, f"This model's maximum context length is {context} tokens; the {prompt_field} take {len(ids)}. "
                                "Please shorten them.", param=prompt_field, code="context_length_exceeded")
        asked = request.token_limit()
        if asked is not None and len(ids) + asked > context:
            field = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
            raise APIError(400, f"This model's maximum context length is {context} tokens. However, you requested {len(ids) + asked} tokens "
                                f"({len(ids)} in the {prompt_field}, {asked} in the completion). Please reduce the length of the "
                                f"{prompt_field} or completion.", param=field, code="context_length_exceeded")
        params = sampling_params(request, len(ids), context, self.defaults)  # type: ignore[arg-type]
        seeds = [params.seed + i if params.seed is not None else None for i in range(request.n or 1)]
        return Generation(ids, [replace(params, seed=seed) for seed in seeds])

    # ------------------------------------------------------------------ generations -> text
    def _submit(self, generation: Generation) -> list[RequestStream]:
        if self.metrics is not None:
            self.metrics.prompt_tokens.inc(len(generation.prompt_ids))
        return [self.engine.submit(generation.prompt_ids, params) for params in generation.choices]

    def _count(self, prompt_tokens: int, completion_tokens: int) -> None:
        note_usage(prompt_tokens, completion_tokens)
        if self.metrics is not None and completion_tokens:
            self.metrics.generation_tokens.inc(completion_tokens)

    async def _collect(self, generation: Generation) -> list[tuple[str, Delta]]:
        """Every choice's whole text and last Delta."""
        submitted = self._submit(generation)
        texts: list[list[str]] = [[] for _ in submitted]
        finals: list[Delta] = [Delta("", False)] * len(submitted)

        async def collect(i: int, stream: RequestStream) -> None:
            while True:
                delta = await stream.get()
                if delta.error:
                    raise _engine_error(delta)
                texts[i].append(delta.text)
                if delta.finished:
                    finals[i] = delta
                    return

        try:
            if len(submitted) == 1:
                await collect(0, submitted[0])
            else:  # the choices' streams are read together (an engine may produce only as they are read)
                await asyncio.gather(*(collect(i, stream) for i, stream in enumerate(submitted)))
        finally:
            for stream in submitted:
                self.engine.abort(stream)
        self._count(len(generation.prompt_ids), sum(d.completion_tokens for d in finals))
        return [("".join(t), final) for t, final in zip(texts, finals)]

    async def _pieces(self, generation: Generation) -> AsyncIterator[Piece]:
        """(choice index, text, finished, finish_reason, tokens) as generated, then a last
        (-1, "", True, None, prompt tokens) item. When the client reads slower than the engine produces,
        the deltas waiting for a choice come out joined (as vLLM does), so a busy server spends its time
        generating rather than framing one event per token."""
        submitted = self._submit(generation)
        merged: asyncio.Queue[tuple[int, Delta]] = asyncio.Queue()
        pumps: list[asyncio.Task[None]] = []
        if len(submitted) > 1:
            pumps = [asyncio.get_running_loop().create_task(_pump(i, stream, merged)) for i, stream in enumerate(submitted)]
        completion = 0
        open_choices = len(submitted)
        try:
            while open_choices:
                if pumps:
                    ready = [await merged.get()]
                    while not merged.empty():
                        ready.append(merged.get_nowait())
                else:
                    ready = [(0, delta) for delta in [await submitted[0].get(), *submitted[0].get_ready()]]
                for item in _coalesce(ready):
                    if item[2]:
                        open_choices -= 1
                        completion += item[4]
                    if item[1] or item[2]:
                        yield item
            self._count(len(generation.prompt_ids), completion)
            yield -1, "", True, None, len(generation.prompt_ids)
        finally:
            for pump in pumps:
                pump.cancel()
            for stream in submitted:
                self.engine.abort(stream)

    # ------------------------------------------------------------------ chat completions
    async def chat(self, request: ChatCompletionRequest, model: str) -> ChatCompletionResponse:
        generation = self.prepare_chat(request)
        results = await self._collect(generation)
        completion = sum(final.completion_tokens for _, final in results)
        prompt = len(generation.prompt_ids)
        choices = [ChatChoice(index=i, message=ChatMessage(role="assistant", content=text), finish_reason=final.finish_reason)
                   for i, (text, final) in enumerate(results)]
        return ChatCompletionResponse(model=model, choices=choices, usage=TokenUsageStats(prompt_tokens=prompt, completion_tokens=completion,
                                                                                          total_tokens=prompt + completion))

    async def chat_stream(self, request: ChatCompletionRequest, model: str) -> AsyncIterator[ChatCompletionChunk]:
        completion = 0
        async for index, text, finished, finish_reason, tokens in self._pieces(self.prepare_chat(request)):
            if index < 0:
                yield ChatCompletionChunk(model=model, usage=TokenUsageStats(prompt_tokens=tokens, completion_tokens=completion, total_tokens=tokens + completion))
                return
            completion += tokens if finished else 0
            yield ChatCompletionChunk.model_construct(  # trusted values: no validation, no fresh id per chunk
                id="", object="chat.completion.chunk", created=0, model=model, usage=None, custom_outputs=None,
                choices=[ChatChunkChoice.model_construct(index=index, delta=ChatChoiceDelta.model_construct(content=text or None),
                                                         finish_reason=finish_reason if finished else None, logprobs=None)])

    async def chat_events(self, request: ChatCompletionRequest, model: str, include_usage: bool) -> AsyncIterator[str]:
        """The chat stream as OpenAI sends it, written straight to JSON (see ``framing.ChatChunkFramer``)."""
        framer = ChatChunkFramer(model)
        completion = 0
        async for index, text, finished, finish_reason, tokens in self._pieces(self.prepare_chat(request)):
            if index < 0:
                if include_usage:
                    yield framer.usage(tokens, completion)
                return
            if finished:
                completion += tokens
            yield framer.choice(index, {"content": text} if text else {}, finish_reason if finished else None)

    # ------------------------------------------------------------------ text completions
    async def completion(self, request: CompletionRequest, model: str) -> dict[str, Any]:
        generations = self.prepare_text(request)
        prompts = request.prompts()
        results = await asyncio.gather(*(self._collect(g) for g in generations))
        choices = []
        prompt_tokens = completion = 0
        for p, (generation, result) in enumerate(zip(generations, results)):
            prompt_tokens += len(generation.prompt_ids)
            for text, final in result:
                completion += final.completion_tokens
                echo = _echo_text(prompts[p]) if request.echo else ""
                choices.append({"index": len(choices), "text": echo + text, "logprobs": None, "finish_reason": final.finish_reason})
        return {"id": new_id("cmpl"), "object": "text_completion", "created": now_seconds(), "model": model, "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}}

    async def completion_events(self, request: CompletionRequest, model: str, include_usage: bool) -> AsyncIterator[str]:
        generations = self.prepare_text(request)
        if len(generations) != 1:
            raise APIError(400, "a streamed completion takes one prompt", param="prompt")
        framer = CompletionChunkFramer(model)
        completion = 0
        echoed: set[int] = set()
        prompt = request.prompts()[0]
        async for index, text, finished, finish_reason, tokens in self._pieces(generations[0]):
            if index < 0:
                if include_usage:
                    yield framer.usage(tokens, completion)
                return
            if request.echo and index not in echoed:
                echoed.add(index)
                text = _echo_text(prompt) + text
            if finished:
                completion += tokens
            yield framer.choice(index, text, finish_reason if finished else None)

    # ------------------------------------------------------------------ /invocations
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
        try:
            chat = ChatCompletionRequest.model_validate({**data, **(params or {})})
        except ValidationError as exc:
            raise validation_error(exc) from None
        async for chunk in self.chat_stream(chat, chat.model or "model"):
            yield chunk.model_dump(exclude_none=True)


def _echo_text(prompt: Union[str, list[int]]) -> str:
    if isinstance(prompt, str):
        return prompt
    raise APIError(400, "echo needs a text prompt", param="echo")


def _engine_error(delta: Delta) -> APIError:
    """A failed sequence as an APIError: refused by the engine (400) or broken in it (500)."""
    if delta.finish_reason == "error":
        return APIError(400, delta.error or "the engine refused the request", code="invalid_request")
    return APIError(500, delta.error or "the engine failed", code="engine_error")


async def _pump(index: int, stream: RequestStream, merged: "asyncio.Queue[tuple[int, Delta]]") -> None:
    while True:
        delta = await stream.get()
        merged.put_nowait((index, delta))
        if delta.finished:
            return


def _coalesce(ready: list[tuple[int, Delta]]) -> list[Piece]:
    """Join the waiting deltas of each choice, in order of each choice's first delta. An error stops
    everything (raised as an APIError)."""
    joined: dict[int, list[Any]] = {}
    for index, delta in ready:
        if delta.error:
            raise _engine_error(delta)
        entry = joined.setdefault(index, [[], False, None, 0])
        entry[0].append(delta.text)
        if delta.finished:
            entry[1], entry[2], entry[3] = True, delta.finish_reason, delta.completion_tokens
    return [(index, "".join(texts), finished, reason, tokens) for index, (texts, finished, reason, tokens) in joined.items()]
