"""``LLMService``: OpenAI chat and text completions (and, through the shared conversions, Responses and
/invocations) on top of an ``Engine``: token usage, n choices, tool calls in the model's own syntax,
grammar-constrained answers, log-probabilities.

Everything that can be checked before generating (the prompt renders and fits, ``max_tokens`` fits beside
it, every parameter can be honoured) is checked when a request is prepared (``llm_requests.py``), so the
routes refuse it before any response bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any, Optional, TypeVar, Union

from pydantic import ValidationError

from servelm.agents import (
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ChatParams,
    CompletionRequest,
    FunctionCall,
    TokenUsageStats,
    ToolCall,
)
from servelm.agents.chat_types import ChatChoiceLogProbs, ChatChunkChoice
from servelm.agents.ids import new_id, now_seconds
from servelm.flavors.engine import SamplingParams, sampling_params
from servelm.flavors.engine.sample.choice import TokenChoice
from servelm.flavors.generation import template_inputs
from servelm.flavors.generation.codec import ChatCodec
from servelm.flavors.generation.tool_calls import (
    ToolCallParser,
    ToolFormat,
    parse_tool_calls,
    prompt_messages,
    template_takes_tools,
    tool_format,
)
from servelm.flavors.pyfunc.wrappers import request_rows

from ..engines.base import Delta, Engine, RequestStream
from ..errors import APIError, validation_error
from ..framing import ChatChunkFramer, CompletionChunkFramer
from ..logs import note_usage
from ..metrics import ServerMetrics
from .base import CHAT, COMPLETIONS, INVOCATIONS, RESPONSES, Capabilities, ModelService
from .llm_outputs import completion_logprobs, token_logprobs, tool_call_deltas
from .llm_requests import guided_decoding, logit_bias, refuse_non_text_parts, refuse_unsupported, tool_plan
from .llm_streams import Piece, collect, pieces
from .llm_timing import GenerationClock

_Prepared = TypeVar("_Prepared")


@dataclass
class Generation:
    """A request ready for the engine: the prompt's token ids, each choice's SamplingParams, and the tool
    call format to read the output with (None: the output is plain text)."""

    prompt_ids: list[int]
    choices: list[SamplingParams]
    tool_format: Optional[ToolFormat] = None
    parallel_tool_calls: bool = True


class LLMService(ModelService):
    """Serves a causal LM through an ``Engine``; ``codec`` renders and tokenizes prompts (the model's chat
    template and tokenizer); ``tool_parser`` names the tool call format (default: the template's)."""

    capabilities = Capabilities(frozenset({CHAT, COMPLETIONS, RESPONSES, INVOCATIONS}), n=True, logprobs=True)

    def __init__(
        self,
        engine: Engine,
        codec: ChatCodec,
        kind: str = "llm/v1/chat",
        defaults: Optional[dict[str, Any]] = None,
        metrics: Optional[ServerMetrics] = None,
        tool_parser: Optional[str] = None,
        max_request_sequences: int = 256,
    ):
        self.engine = engine
        self.max_request_sequences = max_request_sequences
        # Templating and tokenizing run on one thread of their own: off the event loop (a long prompt takes
        # milliseconds to seconds), and one at a time (a fast tokenizer shared between threads can refuse a call
        # while another changes its settings).
        self._tokenizer_thread = ThreadPoolExecutor(1, thread_name_prefix="servelm-tokenize")
        self.codec = codec
        self.kind = kind
        self.defaults = defaults or {}
        self.metrics = metrics
        self.tool_format = tool_format(tool_parser, codec.chat_template)
        self.template_tools = template_takes_tools(codec.chat_template)

    async def start(self) -> None:
        await self.engine.start()

    def health_error(self) -> Optional[str]:
        return self.engine.health_error()

    async def stop(self) -> None:
        await self.engine.stop()
        self._tokenizer_thread.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ requests -> generations
    async def tokenized(self, prepare: Callable[[Any], _Prepared], request: Any) -> _Prepared:
        """``prepare(request)`` (``prepare_chat`` or ``prepare_text``) on the tokenizer thread."""
        return await asyncio.get_running_loop().run_in_executor(self._tokenizer_thread, prepare, request)

    def prepare_chat(self, request: ChatCompletionRequest) -> Generation:
        """The chat request's prompt ids and sampling parameters; a 400 naming the field when it cannot run."""
        refuse_unsupported(request)
        refuse_non_text_parts(request)
        plan = tool_plan(request)
        messages, _ = template_inputs(request)
        self.refuse_text_past_the_context(text_chars(messages), "messages")
        messages, template_tools = prompt_messages(messages, plan.offered, self.tool_format, self.template_tools)
        try:
            ids = self.codec.encode_messages(messages, template_tools)
        except Exception as exc:
            raise APIError(
                400, f"messages could not be rendered with the model's chat template: {exc}", param="messages"
            ) from None
        guided = guided_decoding(request, plan, self.tool_format)
        generation = self._generation(ids, request, "messages", guided)
        if plan.offered:
            generation.tool_format, generation.parallel_tool_calls = self.tool_format, plan.parallel
        return generation

    def prepare_text(self, request: CompletionRequest) -> list[Generation]:
        """One Generation per prompt of a completions request (texts tokenized, token ids taken as they are)."""
        self.refuse_too_many_sequences(len(request.prompts()) * (request.n or 1), "prompt")
        if request.echo and request.logprobs is not None:
            raise APIError(
                400,
                "echo with logprobs asks for the prompt's log-probabilities, which servelm's engines do not compute; "
                "send echo or logprobs, not both",
                param="echo",
            )
        generations = []
        limited = (
            request if request.token_limit() is not None else request.model_copy(update={"max_tokens": 16})
        )  # OpenAI's default
        for prompt in request.prompts():
            if isinstance(prompt, str):
                self.refuse_text_past_the_context(len(prompt), "prompt")
            ids = self.codec.encode_text(prompt) if isinstance(prompt, str) else list(prompt)
            if not ids:
                raise APIError(400, "the prompt is empty", param="prompt")
            vocab = self.codec.vocab_size
            bad = next((t for t in ids if not 0 <= t < vocab), None) if not isinstance(prompt, str) else None
            if bad is not None:
                message = f"the prompt holds token id {bad}; this model's token ids run from 0 to {vocab - 1}"
                raise APIError(400, message, param="prompt")
            generations.append(self._generation(ids, limited, "prompt", None, logprobs=request.logprobs))
        return generations

    def refuse_text_past_the_context(self, chars: int, field: str) -> None:
        """A 400 naming ``field`` for a text too long to fit the context whatever its tokens, before the tokenizer
        spends seconds on it (the bound is generous: twice what the longest tokens could hold)."""
        context = self.engine.context_length
        if chars > 2 * context * self.codec.longest_token_chars:
            raise APIError(
                400,
                f"This model's maximum context length is {context} tokens; the {field} hold {chars} characters, "
                "far more than that many tokens can. Please shorten them.",
                param=field,
                code="context_length_exceeded",
            )

    def refuse_too_many_sequences(self, count: int, field: str) -> None:
        """A 400 naming ``field`` when one request would start more than ``max_request_sequences`` sequences:
        refused before any is tokenized or queued, so one request cannot flood the engine."""
        if count > self.max_request_sequences:
            raise APIError(
                400,
                f"this request would start {count} sequences; this server takes at most "
                f"{self.max_request_sequences} per request (--max-request-sequences)",
                param=field,
            )

    def _generation(
        self, ids: list[int], request: ChatParams, prompt_field: str, guided: Any, logprobs: Optional[int] = None
    ) -> Generation:
        context = self.engine.context_length
        if len(ids) >= context:
            raise APIError(
                400,
                f"This model's maximum context length is {context} tokens; the {prompt_field} take {len(ids)}. "
                "Please shorten them.",
                param=prompt_field,
                code="context_length_exceeded",
            )
        asked = request.token_limit()
        if asked is not None and len(ids) + asked > context:
            field = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
            raise APIError(
                400,
                f"This model's maximum context length is {context} tokens. "
                f"However, you requested {len(ids) + asked} tokens "
                f"({len(ids)} in the {prompt_field}, {asked} in the completion). Please reduce the length of the "
                f"{prompt_field} or completion.",
                param=field,
                code="context_length_exceeded",
            )
        params = sampling_params(request, len(ids), context, self.defaults)
        if logprobs is None and isinstance(request.logprobs, bool) and request.logprobs:
            logprobs = request.top_logprobs or 0
        params = replace(
            params,
            guided=guided,
            logprobs=logprobs,
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
            logit_bias=logit_bias(request),
        )
        seeds = [params.seed + i if params.seed is not None else None for i in range(request.n or 1)]
        return Generation(ids, [replace(params, seed=seed) for seed in seeds])

    # ------------------------------------------------------------------ generations -> pieces
    def _submit(self, generation: Generation) -> tuple[list[RequestStream], GenerationClock]:
        if self.metrics is not None:
            self.metrics.prompt_tokens.inc(len(generation.prompt_ids))
        clock = GenerationClock(self.model_metrics, len(generation.choices))
        return [self.engine.submit(generation.prompt_ids, params) for params in generation.choices], clock

    def _count(self, prompt_tokens: int, completion_tokens: int) -> None:
        note_usage(prompt_tokens, completion_tokens)
        if self.metrics is not None and completion_tokens:
            self.metrics.generation_tokens.inc(completion_tokens)

    async def _collect(self, generation: Generation) -> list[tuple[str, Delta, list[TokenChoice]]]:
        """Every choice's whole text, last Delta and token log-probabilities."""
        streams, clock = self._submit(generation)
        results: list[tuple[str, Delta, list[TokenChoice]]] = []
        try:
            results = await collect(self.engine, streams, clock)
        finally:
            clock.finished(
                streams,
                len(generation.prompt_ids),
                [(final.finish_reason, final.completion_tokens) for _, final, _ in results]
                or [(None, 0)] * len(streams),
            )
        self._count(len(generation.prompt_ids), sum(final.completion_tokens for _, final, _ in results))
        return results

    async def _pieces(self, generation: Generation) -> AsyncIterator[Piece]:
        """Each choice's output as generated (``llm_streams.pieces``), then a last Piece with choice -1
        carrying the prompt tokens."""
        completion = 0
        streams, clock = self._submit(generation)
        ends: list[tuple[Optional[str], int]] = [(None, 0)] * len(streams)
        try:
            async with aclosing(pieces(self.engine, streams, clock)) as generated:
                async for piece in generated:
                    if piece.finished:
                        completion += piece.tokens
                        ends[piece.choice] = (piece.finish_reason, piece.tokens)
                    yield piece
        finally:
            clock.finished(streams, len(generation.prompt_ids), ends)
        self._count(len(generation.prompt_ids), completion)
        yield Piece(-1, "", True, None, len(generation.prompt_ids), None)

    async def _chat_deltas(
        self, generation: Generation
    ) -> AsyncIterator[tuple[int, dict[str, Any], Optional[str], Optional[dict[str, Any]]]]:
        """(choice index, delta, finish_reason, logprobs) per piece, tool calls parsed out of the text;
        a last (-1, {"prompt_tokens", "completion_tokens"}, None, None)."""
        parsers = [ToolCallParser(generation.tool_format) for _ in generation.choices] if generation.tool_format else []
        called: set[int] = set()
        completion = 0
        async for piece in self._pieces(generation):
            if piece.choice < 0:
                yield -1, {"prompt_tokens": piece.tokens, "completion_tokens": completion}, None, None
                return
            delta: dict[str, Any] = {}
            if parsers:
                parser = parsers[piece.choice]
                events = parser.feed(piece.text) + (parser.finish() if piece.finished else [])
                content = "".join(e.content for e in events)
                calls = tool_call_deltas(events, first_only=not generation.parallel_tool_calls)
                if calls:
                    delta["tool_calls"] = calls
                    called.add(piece.choice)
            else:
                content = piece.text
            if content:
                delta["content"] = content
            if piece.finished:
                completion += piece.tokens
            finish = (
                ("tool_calls" if piece.choice in called and piece.finish_reason != "length" else piece.finish_reason)
                if piece.finished
                else None
            )
            logprobs = {"content": token_logprobs(piece.logprobs, self.codec.token_bytes)} if piece.logprobs else None
            if delta or finish or logprobs:
                yield piece.choice, delta, finish, logprobs

    # ------------------------------------------------------------------ chat completions
    async def chat(self, request: ChatCompletionRequest, model: str) -> ChatCompletionResponse:
        generation = await self.tokenized(self.prepare_chat, request)
        results = await self._collect(generation)
        completion = sum(final.completion_tokens for _, final, _ in results)
        prompt = len(generation.prompt_ids)
        choices = []
        for i, (text, final, logprobs) in enumerate(results):
            message, reason = ChatMessage(role="assistant", content=text), final.finish_reason
            if generation.tool_format is not None:
                content, calls = parse_tool_calls(text, generation.tool_format)
                calls = calls if generation.parallel_tool_calls else calls[:1]
                if calls:
                    tool_calls = [
                        ToolCall(id=c.id, function=FunctionCall(name=c.name or "", arguments=c.arguments))
                        for c in calls
                    ]
                    message = ChatMessage(role="assistant", content=content or None, tool_calls=tool_calls)
                    reason = "tool_calls" if reason != "length" else reason
            lp = (
                ChatChoiceLogProbs.model_validate({"content": token_logprobs(logprobs, self.codec.token_bytes)})
                if generation.choices[i].logprobs is not None
                else None
            )
            choices.append(ChatChoice(index=i, message=message, finish_reason=reason, logprobs=lp))
        return ChatCompletionResponse(
            model=model,
            choices=choices,
            usage=TokenUsageStats(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion),
        )

    async def chat_stream(self, request: ChatCompletionRequest, model: str) -> AsyncIterator[ChatCompletionChunk]:
        async for index, delta, finish, logprobs in self._chat_deltas(await self.tokenized(self.prepare_chat, request)):
            if index < 0:
                usage = TokenUsageStats(
                    prompt_tokens=delta["prompt_tokens"],
                    completion_tokens=delta["completion_tokens"],
                    total_tokens=delta["prompt_tokens"] + delta["completion_tokens"],
                )
                yield ChatCompletionChunk(model=model, usage=usage)
                return
            choice = ChatChunkChoice.model_validate(
                {"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
            )
            yield ChatCompletionChunk.model_construct(  # trusted values: no fresh id per chunk
                id="",
                object="chat.completion.chunk",
                created=0,
                model=model,
                usage=None,
                custom_outputs=None,
                choices=[choice],
            )

    async def chat_events(self, request: ChatCompletionRequest, model: str, include_usage: bool) -> AsyncIterator[str]:
        """The chat stream as OpenAI sends it, written straight to JSON (see ``framing.ChatChunkFramer``)."""
        framer = ChatChunkFramer(model)
        async for index, delta, finish, logprobs in self._chat_deltas(await self.tokenized(self.prepare_chat, request)):
            if index < 0:
                if include_usage:
                    yield framer.usage(delta["prompt_tokens"], delta["completion_tokens"])
                return
            yield framer.choice(index, delta, finish, logprobs)

    # ------------------------------------------------------------------ text completions
    async def completion(self, request: CompletionRequest, model: str) -> dict[str, Any]:
        generations = await self.tokenized(self.prepare_text, request)
        prompts = request.prompts()
        results = await asyncio.gather(*(self._collect(g) for g in generations))
        choices: list[dict[str, Any]] = []
        prompt_tokens = completion = 0
        for p, (generation, result) in enumerate(zip(generations, results)):
            prompt_tokens += len(generation.prompt_ids)
            for text, final, logprobs in result:
                completion += final.completion_tokens
                echo = _echo_text(prompts[p]) if request.echo else ""
                lp = (
                    completion_logprobs(logprobs, self.codec.token_bytes) if request.logprobs is not None else None
                )  # (echo with logprobs is refused: the offsets start at the completion)
                choices.append(
                    {"index": len(choices), "text": echo + text, "logprobs": lp, "finish_reason": final.finish_reason}
                )
        return {
            "id": new_id("cmpl"),
            "object": "text_completion",
            "created": now_seconds(),
            "model": model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion,
            },
        }

    async def completion_events(
        self, request: CompletionRequest, model: str, include_usage: bool
    ) -> AsyncIterator[str]:
        generations = await self.tokenized(self.prepare_text, request)
        if len(generations) != 1:
            raise APIError(400, "a streamed completion takes one prompt", param="prompt")
        framer = CompletionChunkFramer(model)
        completion = 0
        offsets: dict[int, int] = {}
        prompt = request.prompts()[0]
        async for piece in self._pieces(generations[0]):
            if piece.choice < 0:
                if include_usage:
                    yield framer.usage(piece.tokens, completion)
                return
            text = piece.text
            if request.echo and piece.choice not in offsets:
                text = _echo_text(prompt) + text
            start = offsets.get(piece.choice, len(text) - len(piece.text))
            offsets[piece.choice] = start + len(piece.text)
            if piece.finished:
                completion += piece.tokens
            lp = (
                completion_logprobs(piece.logprobs or [], self.codec.token_bytes, start)
                if request.logprobs is not None
                else None
            )
            yield framer.choice(piece.choice, text, piece.finish_reason if piece.finished else None, lp)

    # ------------------------------------------------------------------ /invocations
    async def invoke(self, data: Any, params: Optional[dict[str, Any]]) -> Any:
        """/invocations: chat requests in (one, a list, or DataFrame rows as ``dataframe_records`` /
        ``dataframe_split`` send them), a list of chat completions out, one per request, as MLflow's LLM
        pyfunc answers (``response[0]["choices"][0]["message"]["content"]``)."""
        bodies = request_rows(data) if type(data).__name__ == "DataFrame" else data
        bodies = bodies if isinstance(bodies, list) else [bodies]
        sequences = sum((b.get("n") or 1) if isinstance(b, dict) and isinstance(b.get("n"), int) else 1 for b in bodies)
        self.refuse_too_many_sequences(sequences, "inputs")
        try:
            chats = [ChatCompletionRequest.model_validate({**b, **(params or {})}) for b in bodies]
        except ValidationError as exc:
            raise validation_error(exc) from None
        except TypeError:
            raise APIError(400, "this model takes chat requests: {'messages': [...]} (or a list of them)") from None
        answers = await asyncio.gather(*(self.chat(c, c.model or self.served_name) for c in chats))
        return [a.model_dump(exclude_none=True) for a in answers]

    async def invoke_stream(self, data: Any, params: Optional[dict[str, Any]]) -> AsyncIterator[Any]:
        try:
            chat = ChatCompletionRequest.model_validate({**data, **(params or {})})
        except ValidationError as exc:
            raise validation_error(exc) from None
        async for chunk in self.chat_stream(chat, chat.model or self.served_name):
            yield chunk.model_dump(exclude_none=True)


def text_chars(value: Any) -> int:
    """Characters of text in a message list (strings at any depth: contents, parts, tool arguments)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(text_chars(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(text_chars(v) for v in value)
    return 0


def _echo_text(prompt: Union[str, list[int]]) -> str:
    if isinstance(prompt, str):
        return prompt
    raise APIError(400, "echo needs a text prompt", param="echo")
