"""Chat requests for a Hugging Face LM: the chat template checked at save and load, and prompts rendered
with it (the pyfunc model's encoding; the server encodes through ``generation.codec.HFCodec`` too)."""

from __future__ import annotations

from typing import Any

from servelm.agents import ChatCompletionRequest

from ..errors import ModelFormatError
from ..generation import template_inputs
from ..generation.codec import HFCodec

__all__ = ["encode_chat", "require_chat_template"]


def require_chat_template(tokenizer: Any, where: str) -> None:
    """A clear error (at save or load, not at the first request) when the tokenizer has no chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelFormatError(
            f"{where}: the tokenizer has no chat template (chat_template.jinja or tokenizer_config.json "
            "'chat_template'); set tokenizer.chat_template or save with task='text-generation'"
        )


def encode_chat(tokenizer: Any, request: ChatCompletionRequest) -> list[int]:
    """Token ids of a chat request rendered with the tokenizer's chat template (tools passed through)."""
    return HFCodec(tokenizer).encode_messages(*template_inputs(request))
