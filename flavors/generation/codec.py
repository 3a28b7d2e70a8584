"""``ChatCodec``: what serving needs from a model's tokenizer, whatever the runtime: prompts rendered with
the chat template and tokenized, plain prompts tokenized, and the bytes of a token (for log-probabilities).

The transformers flavor provides ``HFCodec`` (a transformers tokenizer); the onnx flavor reads its
folder's tokenizer.json and chat template directly (``flavors/onnx/model.py``).
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Protocol

from .detokenizer import rust_tokenizer


class ChatCodec(Protocol):
    """Prompts in, token ids out; token ids back to bytes."""

    #: the chat template's source (tool support and the tool call format are read from it), or None
    chat_template: Optional[str]

    def encode_messages(self, messages: list[dict[str, Any]], tools: Optional[list[dict[str, Any]]]) -> list[int]:
        """Token ids of ``messages`` (and ``tools``) rendered with the chat template, generation prompt on."""
        ...

    def encode_text(self, text: str) -> list[int]:
        """Token ids of a plain prompt, with the special tokens the tokenizer adds (a BOS, for many models)."""
        ...

    def token_bytes(self, token: int) -> bytes:
        """The bytes a token stands for (a piece of UTF-8 that may be incomplete)."""
        ...

    @property
    def vocab_size(self) -> int:
        """Token ids a prompt may hold run from 0 to ``vocab_size - 1``: the tokenizer's, added tokens included
        (as vLLM checks token prompts)."""
        ...

    @property
    def longest_token_chars(self) -> int:
        """The most characters of text one token can stand for (the longest vocabulary entry): a text of more
        than ``context * longest_token_chars`` characters cannot fit the context, whatever its tokens."""
        ...


class TokenBytes:
    """Token id -> bytes for a tokenizers-library tokenizer (llguidance reads byte-level and
    sentencepiece vocabularies alike); built on first use, ~0.5 s."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._llg: Any = None

    def __call__(self, token: int) -> bytes:
        if self._llg is None:
            import llguidance

            from ..engine.structured import tokenizer_json

            self._llg = llguidance.LLTokenizer(tokenizer_json(self.tokenizer))
        return bytes(self._llg.decode_bytes([token]))


class HFCodec:
    """A ``ChatCodec`` over a transformers tokenizer."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.chat_template: Optional[str] = getattr(tokenizer, "chat_template", None)
        self.token_bytes = TokenBytes(tokenizer)

    def encode_messages(self, messages: list[dict[str, Any]], tools: Optional[list[dict[str, Any]]]) -> list[int]:
        kwargs: dict[str, Any] = {"tools": tools} if tools else {}
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs)
        return prompt_ids(self.tokenizer, text)

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @functools.cached_property
    def longest_token_chars(self) -> int:
        return max(map(len, self.tokenizer.get_vocab()), default=1)


def prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of an already templated prompt (the template added any special tokens).

    A fast tokenizer's Rust backend encodes directly (transformers' ``__call__`` costs several times the
    encoding itself) unless the backend carries truncation or padding settings, which ``__call__`` resets.
    """
    backend = rust_tokenizer(tokenizer)
    if backend is not None and backend.truncation is None and backend.padding is None:
        return list(backend.encode(text, add_special_tokens=False).ids)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
