"""Chat and text completion chunks exactly as OpenAI sends them (the ``openai`` client's contract).

One id and ``created`` for all chunks of a response; the first delta of each choice carries the role
together with its first content; every choice ends with a finish_reason chunk; a usage chunk with
``choices: []`` only when ``stream_options.include_usage``; the route then writes ``data: [DONE]``.

``openai_chat_chunks`` normalizes any stream of ``ChatCompletionChunk`` (agents yield all sorts);
``ChatChunkFramer`` / ``CompletionChunkFramer`` write the LLM engines' deltas straight to JSON text
(a pydantic object per token costs more than generating the token on a small model).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Optional

from servelm.agents import ChatCompletionChunk, TokenUsageStats
from servelm.agents.ids import new_id, now_seconds

_COMPACT = (",", ":")


def dumps(data: Any) -> str:
    """Compact JSON, as every chunk is sent."""
    return json.dumps(data, separators=_COMPACT)


async def openai_chat_chunks(
    chunks: AsyncIterator[ChatCompletionChunk], model: str, include_usage: bool
) -> AsyncIterator[dict[str, Any]]:
    """Normalize ``chunks`` into OpenAI's chunk sequence, as JSON-ready dicts."""
    chunk_id, created = new_id("chatcmpl"), now_seconds()
    role_sent: set[int] = set()
    finished: set[int] = set()
    used_tools: set[int] = set()
    usage: Optional[TokenUsageStats] = None

    def envelope(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }

    async for chunk in chunks:
        if chunk.usage is not None:
            usage = chunk.usage
        extra = {"custom_outputs": chunk.custom_outputs} if chunk.custom_outputs else {}
        if not chunk.choices and extra:
            yield envelope([], **extra)
        for choice in chunk.choices:
            delta = choice.delta.model_dump(exclude_none=True)
            if choice.index in finished:
                continue
            has_payload = bool(delta.get("content") or delta.get("tool_calls") or delta.get("refusal"))
            if not has_payload and choice.finish_reason is None:
                if extra:
                    yield envelope([], **extra)
                continue
            if choice.index in role_sent:
                delta.pop("role", None)
            else:
                delta["role"] = delta.get("role") or "assistant"
                role_sent.add(choice.index)
            if delta.get("tool_calls"):
                used_tools.add(choice.index)
            out: dict[str, Any] = {
                "index": choice.index,
                "delta": delta,
                "logprobs": None,
                "finish_reason": choice.finish_reason,
            }
            if choice.logprobs is not None:
                out["logprobs"] = choice.logprobs.model_dump(exclude_none=True)
            yield envelope([out], **extra)
            if choice.finish_reason is not None:
                finished.add(choice.index)
    for index in sorted(role_sent - finished) or ([0] if not finished else []):
        delta = {} if index in role_sent else {"role": "assistant", "content": ""}
        reason = "tool_calls" if index in used_tools else "stop"
        yield envelope([{"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}])
    if include_usage:
        yield envelope([], usage=(usage or TokenUsageStats()).model_dump())


class _Framer:
    """Chunk JSON of one streamed response: the envelope (id, object, created, model) written once."""

    def __init__(self, prefix: str, kind: str, model: str):
        self.head = (
            f'{{"id":"{new_id(prefix)}","object":"{kind}","created":{now_seconds()},'
            f'"model":{json.dumps(model)},"choices":'
        )

    def usage(self, prompt_tokens: int, completion_tokens: int) -> str:
        """The final usage chunk (``choices: []``)."""
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        return self.head + '[],"usage":' + dumps(usage) + "}"


class ChatChunkFramer(_Framer):
    """``chat.completion.chunk`` JSON: a choice's first chunk carries the role."""

    def __init__(self, model: str):
        super().__init__("chatcmpl", "chat.completion.chunk", model)
        self.started: set[int] = set()

    def choice(
        self, index: int, delta: dict[str, Any], finish_reason: Optional[str] = None, logprobs: Any = None
    ) -> str:
        """A chunk with one choice; the choice's first chunk gets ``role`` (and ``content: ""`` when it has none)."""
        if index not in self.started:
            self.started.add(index)
            delta = {"role": "assistant", **delta}
            if "content" not in delta and "tool_calls" not in delta:
                delta["content"] = ""
        return (
            self.head
            + "["
            + dumps({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason})
            + "]}"
        )


class CompletionChunkFramer(_Framer):
    """``text_completion`` chunk JSON (the legacy /v1/completions stream)."""

    def __init__(self, model: str):
        super().__init__("cmpl", "text_completion", model)

    def choice(self, index: int, text: str, finish_reason: Optional[str] = None, logprobs: Any = None) -> str:
        return (
            self.head
            + "["
            + dumps({"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason})
            + "]}"
        )
