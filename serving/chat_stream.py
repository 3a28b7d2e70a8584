"""Turn any stream of chat chunks into exactly what OpenAI sends (the ``openai`` client's contract).

One id and ``created`` for all chunks; the first delta of each choice carries the role together with
its first content; every choice ends with a finish_reason chunk; a usage chunk with ``choices: []`` only
when ``stream_options.include_usage``; the caller then writes ``data: [DONE]``.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Optional

from servelm.agents import ChatCompletionChunk, TokenUsageStats
from servelm.agents.ids import new_id, now_seconds


async def openai_chat_chunks(chunks: AsyncIterator[ChatCompletionChunk], model: str, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    """Normalize ``chunks`` into OpenAI's chunk sequence, as JSON-ready dicts."""
    chunk_id, created = new_id("chatcmpl"), now_seconds()
    role_sent: set[int] = set()
    finished: set[int] = set()
    used_tools: set[int] = set()
    usage: Optional[TokenUsageStats] = None

    def envelope(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices, **extra}

    async for chunk in chunks:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta.model_dump(exclude_none=True)
            if choice.index in finished:
                continue
            has_payload = bool(delta.get("content") or delta.get("tool_calls") or delta.get("refusal"))
            if not has_payload and choice.finish_reason is None:
                continue
            if choice.index in role_sent:
                delta.pop("role", None)
            else:
                delta["role"] = delta.get("role") or "assistant"
                role_sent.add(choice.index)
            if delta.get("tool_calls"):
                used_tools.add(choice.index)
            out: dict[str, Any] = {"index": choice.index, "delta": delta, "logprobs": None, "finish_reason": choice.finish_reason}
            if choice.logprobs is not None:
                out["logprobs"] = choice.logprobs.model_dump(exclude_none=True)
            extra = {"custom_outputs": chunk.custom_outputs} if chunk.custom_outputs else {}
            yield envelope([out], **extra)
            if choice.finish_reason is not None:
                finished.add(choice.index)
    for index in sorted(role_sent - finished) or ([0] if not finished else []):
        delta = {} if index in role_sent else {"role": "assistant", "content": ""}
        reason = "tool_calls" if index in used_tools else "stop"
        yield envelope([{"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}])
    if include_usage:
        yield envelope([], usage=(usage or TokenUsageStats()).model_dump())
