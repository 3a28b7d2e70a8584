"""Incremental detokenization: token ids to text as a sequence streams, never half a character."""

from __future__ import annotations

from typing import Any


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
