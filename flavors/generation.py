"""What every generation engine shares: OpenAI request parameters as SamplingParams, incremental
detokenization, and stop strings applied to streamed text. Plain Python (no torch, no onnxruntime), so any engine can use it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from servelm.agents import ChatCompletionRequest
from servelm.agents.chat_types import content_text


@dataclass
class Sequence:
    """One generation as a batcher tracks it: prompt, parameters, progress (engines add their own state)."""

    prompt_ids: list[int]
    params: "SamplingParams"
    seq_id: int = 0
    generated: list[int] = field(default_factory=list)
    finish_reason: Optional[str] = None
    aborted: bool = False
    text: str = ""
    stopper: Optional["StopChecker"] = None


@dataclass
class StepOutput:
    """What one step produced for one sequence: new text (may be empty) and whether it finished."""

    seq: Sequence
    text: str
    finished: bool


def template_inputs(request: ChatCompletionRequest) -> tuple[list[dict[str, Any]], Optional[list[dict[str, Any]]]]:
    """(messages, tools) as chat templates take them: plain dicts, text content, tool calls kept."""
    messages = []
    for m in request.messages:
        message: dict[str, Any] = {"role": m.role, "content": content_text(m.content)}
        if m.tool_calls:
            message["tool_calls"] = [c.model_dump() for c in m.tool_calls]
        if m.tool_call_id:
            message["tool_call_id"] = m.tool_call_id
        if m.name:
            message["name"] = m.name
        messages.append(message)
    tools = [t.model_dump(exclude_none=True) for t in request.tools] if request.tools else None
    return messages, tools


@dataclass
class SamplingParams:
    """How one sequence picks its tokens and when it stops (OpenAI's parameters)."""

    max_tokens: int = 256
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: off
    seed: Optional[int] = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False


def sampling_params(request: ChatCompletionRequest, prompt_length: int, context_length: int, defaults: Optional[dict[str, Any]] = None) -> SamplingParams:
    """SamplingParams for one request; the token cap defaults to what is left of the context."""
    defaults = defaults or {}
    room = max(1, context_length - prompt_length)
    limit = request.token_limit() or defaults.get("max_tokens") or room
    temperature = request.temperature if request.temperature is not None else defaults.get("temperature", 1.0)
    return SamplingParams(
        max_tokens=min(int(limit), room),
        temperature=float(temperature),
        top_p=float(request.top_p if request.top_p is not None else defaults.get("top_p", 1.0)),
        top_k=int(request.top_k if request.top_k is not None else defaults.get("top_k", 0)),
        seed=request.seed,
        stop=list(request.stop or defaults.get("stop") or []),
        ignore_eos=bool((request.model_extra or {}).get("ignore_eos", defaults.get("ignore_eos", False))),  # vLLM's extension
    )


class IncrementalDetokenizer:
    """Decodes one sequence's tokens a step at a time without re-decoding everything and without ever
    emitting half of a multi-byte character (byte-level BPE splits them across tokens).

    With a Rust (``tokenizers``) backend the steps run in ``tokenizers.decoders.DecodeStream``, as vLLM
    does; otherwise each step decodes a short window twice and keeps the difference. Both give the text
    ``tokenizer.decode(ids, skip_special_tokens=True)`` gives.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self._prefix = 0  # start of the window that gives the next tokens their context
        self._read = 0  # tokens up to here are already turned into text
        self._backend = rust_tokenizer(tokenizer)
        self._stream = _decode_stream() if self._backend is not None else None

    def _decode(self, ids: list[int]) -> str:
        if self._backend is not None:
            return str(self._backend.decode(ids, skip_special_tokens=True))
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def add(self, token_id: int) -> str:
        """Append a token; return the new text it completes ('' while a character is incomplete)."""
        self.ids.append(token_id)
        if self._stream is not None:
            text = self._stream.step(self._backend, token_id)
            if text is None:
                return ""
            self._read = len(self.ids)
            return str(text)
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back at the end (an incomplete character is emitted as is)."""
        if self._read == len(self.ids):
            return ""
        start = self._prefix if self._stream is None else max(0, self._read - 4)  # a few tokens of context
        before = self._decode(self.ids[start : self._read])
        after = self._decode(self.ids[start:])
        self._prefix = self._read = len(self.ids)
        return after[len(before) :]


def rust_tokenizer(tokenizer: Any) -> Any:
    """The ``tokenizers.Tokenizer`` that decodes exactly as ``tokenizer.decode`` does, or None.

    A transformers fast tokenizer's own ``decode`` adds Python-side conversions that cost several times
    the decoding itself; its backend is used directly unless it would also clean up spaces afterwards.
    """
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None
    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if isinstance(backend, Tokenizer) and not getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return backend
    return None


def _decode_stream() -> Any:
    try:
        from tokenizers.decoders import DecodeStream
    except ImportError:  # tokenizers < 0.21
        return None
    return DecodeStream(skip_special_tokens=True)


class StopChecker:
    """Applies OpenAI ``stop`` strings to streamed text: text that may begin a stop string is held back
    until it is known not to; a match ends the output before the stop string."""

    def __init__(self, stops: Optional[list[str]]):
        self.stops = [s for s in (stops or []) if s]
        self.longest = max((len(s) for s in self.stops), default=0)
        self.text = ""
        self.sent = 0

    def feed(self, delta: str) -> tuple[str, bool]:
        """Add generated text; return (text safe to emit now, whether a stop string was hit)."""
        if not self.stops:
            self.text += delta
            self.sent = len(self.text)
            return delta, False
        start = max(0, self.sent - self.longest + 1)
        self.text += delta
        hit = -1
        for stop in self.stops:
            i = self.text.find(stop, start)
            if i != -1 and (hit == -1 or i < hit):
                hit = i
        if hit != -1:
            out = self.text[self.sent : hit]
            self.text = self.text[:hit]
            self.sent = hit
            return out, True
        hold = self._partial_suffix()
        end = len(self.text) - hold
        out = self.text[self.sent : end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return out, False

    def flush(self) -> str:
        """The held-back tail, at the end of generation."""
        out = self.text[self.sent :]
        self.sent = len(self.text)
        return out

    def _partial_suffix(self) -> int:
        """Length of the longest end of the text that is a proper prefix of some stop string."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.text)), best, -1):
                if self.text.endswith(stop[:n]):
                    best = n
                    break
        return best
