"""OpenAI chat requests for a Hugging Face LM: prompt rendering with the tokenizer's chat template, and
the mapping of request parameters to SamplingParams. Shared by the pyfunc model and the served engine."""

from __future__ import annotations

from typing import Any

from servelm.agents import ChatCompletionRequest

from ..errors import ModelFormatError
from ..generation import rust_tokenizer, sampling_params, template_inputs

__all__ = ["encode_chat", "encode_text", "prompt_ids", "render_prompt", "require_chat_template", "sampling_params"]


def require_chat_template(tokenizer: Any, where: str) -> None:
    """A clear error (at save or load, not at the first request) when the tokenizer has no chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelFormatError(f"{where}: the tokenizer has no chat template (chat_template.jinja or tokenizer_config.json "
                               "'chat_template'); set tokenizer.chat_template or save with task='text-generation'")


def render_prompt(tokenizer: Any, request: ChatCompletionRequest) -> str:
    """The prompt text for a chat request: the tokenizer's template, tools passed through, generation prompt on."""
    messages, tools = template_inputs(request)
    kwargs: dict[str, Any] = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs)


def prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of an already templated prompt (the template added any special tokens).

    A fast tokenizer's Rust backend encodes directly (transformers' ``__call__`` costs several times the
    encoding itself) unless the backend carries truncation or padding settings, which ``__call__`` resets.
    """
    backend = rust_tokenizer(tokenizer)
    if backend is not None and backend.truncation is None and backend.padding is None:
        return list(backend.encode(text, add_special_tokens=False).ids)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a plain prompt, with the special tokens the tokenizer adds (a BOS, for many models)."""
    return list(tokenizer(text)["input_ids"])


def encode_chat(tokenizer: Any, request: ChatCompletionRequest) -> list[int]:
    """Token ids of a chat request rendered with the tokenizer's chat template."""
    return prompt_ids(tokenizer, render_prompt(tokenizer, request))
