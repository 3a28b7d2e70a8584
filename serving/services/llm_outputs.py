"""What an LLM's output turns into on the wire: OpenAI log-probability objects (chat, Responses and legacy
completions shapes) and tool call deltas, from the engine's tokens and the tool call parser's events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from servelm.flavors.engine.sample.choice import TokenChoice
from servelm.flavors.generation.tool_calls import ToolEvent

TokenBytes = Callable[[int], bytes]


def _entry(token: int, logprob: float, token_bytes: TokenBytes) -> dict[str, Any]:
    raw = token_bytes(token)
    return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}


def token_logprobs(choices: list[TokenChoice], token_bytes: TokenBytes) -> list[dict[str, Any]]:
    """Chat / Responses log-probability entries: token, logprob, bytes and the top alternatives."""
    out = []
    for choice in choices:
        entry = _entry(choice.token, choice.logprob if choice.logprob is not None else 0.0, token_bytes)
        entry["top_logprobs"] = [_entry(token, logprob, token_bytes) for token, logprob in choice.top or []]
        out.append(entry)
    return out


def completion_logprobs(choices: list[TokenChoice], token_bytes: TokenBytes, offset: int = 0) -> dict[str, Any]:
    """Legacy completions log-probabilities: parallel lists of tokens, their logprobs, the top
    alternatives as {token: logprob} and each token's character offset in the text (from ``offset``)."""
    tokens, logprobs, tops, offsets = [], [], [], []
    for choice in choices:
        text = token_bytes(choice.token).decode("utf-8", errors="replace")
        tokens.append(text)
        logprobs.append(choice.logprob)
        tops.append({token_bytes(t).decode("utf-8", errors="replace"): lp for t, lp in choice.top or []})
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets}


def tool_call_deltas(events: list[ToolEvent], first_only: bool = False) -> list[dict[str, Any]]:
    """A chat chunk's ``tool_calls`` entries for one piece's parser events: one entry per call, its
    argument pieces joined (a piece that both starts a call and begins its arguments gives one entry with
    id, name and arguments, as OpenAI streams them, not two entries of the same index); with
    ``first_only``, the first call's only."""
    entries: list[dict[str, Any]] = []
    for delta in map(tool_call_delta, events):
        if delta is None or (first_only and delta["index"] != 0):
            continue
        if entries and entries[-1]["index"] == delta["index"]:
            entries[-1]["function"]["arguments"] += delta["function"]["arguments"]
        else:
            entries.append(delta)
    return entries


def tool_call_delta(event: ToolEvent) -> Optional[dict[str, Any]]:
    """A chat chunk's ``tool_calls`` entry for a parser event: id, type and name when a call starts,
    argument pieces after (None for a content event)."""
    call = event.call
    if call is None:
        return None
    if event.name is not None:
        return {
            "index": call.index,
            "id": call.id,
            "type": "function",
            "function": {"name": event.name, "arguments": event.arguments},
        }
    return {"index": call.index, "function": {"arguments": event.arguments}}
