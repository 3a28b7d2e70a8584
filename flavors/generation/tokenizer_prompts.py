"""A tokenizer folder as a ``ChatCodec``: tokenizer.json (the tokenizers library) and the chat template
(jinja2), without transformers or torch, so a serving process whose engine runs elsewhere (the onnx engine's
process, llama.cpp) keeps only this."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Optional

from servelm.agents import ChatCompletionRequest

from ..errors import ModelFormatError
from .chat_template import ChatTemplate
from .codec import TokenBytes
from .templates import template_inputs


@dataclass
class TokenizerPrompts:
    """A folder's tokenizer and chat template (a ``ChatCodec``), with its context length and end-of-sequence ids."""

    path: str
    tokenizer: Any  # tokenizers.Tokenizer
    template: Optional[ChatTemplate]
    context_length: int
    eos_ids: frozenset[int]

    @classmethod
    def from_folder(cls, folder: str, context_length: int, eos_ids: frozenset[int]) -> TokenizerPrompts:
        """The tokenizer.json and chat template of ``folder``."""
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ModelFormatError("reading a tokenizer folder needs the tokenizers package") from None
        tokenizer_file = os.path.join(folder, "tokenizer.json")
        if not os.path.isfile(tokenizer_file):
            raise ModelFormatError(f"{folder} has no tokenizer.json")
        return cls(
            folder, Tokenizer.from_file(tokenizer_file), ChatTemplate.from_folder(folder), context_length, eos_ids
        )

    def __post_init__(self) -> None:
        self.chat_template = self.template.source if self.template is not None else None
        self.token_bytes = TokenBytes(self.tokenizer)

    def encode_messages(self, messages: list[dict[str, Any]], tools: Optional[list[dict[str, Any]]]) -> list[int]:
        """Token ids of messages (and tools) rendered with the folder's chat template (a ``ChatCodec``)."""
        if self.template is None:
            raise ModelFormatError(f"{self.path} has no chat template")
        return list(self.tokenizer.encode(self.template.render(messages, tools), add_special_tokens=False).ids)

    def encode_text(self, text: str) -> list[int]:
        """Token ids of a plain prompt, with the special tokens the tokenizer adds."""
        return list(self.tokenizer.encode(text).ids)

    @property
    def vocab_size(self) -> int:
        """Token ids a prompt may hold run from 0 to ``vocab_size - 1`` (a ``ChatCodec``)."""
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    @functools.cached_property
    def longest_token_chars(self) -> int:
        """The most characters of text one token can stand for (a ``ChatCodec``)."""
        return max(map(len, self.tokenizer.get_vocab(with_added_tokens=True)), default=1)

    def chat_prompt_ids(self, request: ChatCompletionRequest) -> list[int]:
        """Token ids of a chat request rendered with the folder's chat template (tools passed through)."""
        return self.encode_messages(*template_inputs(request))
