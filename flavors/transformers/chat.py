"""OpenAI chat requests for a Hugging Face LM: prompt rendering with the tokenizer's chat template, and
the mapping of request parameters to SamplingParams. Shared by the pyfunc model and the served engine."""

from __future__ import annotations

from typing import Any, Optional

from servelm.agents import ChatCompletionRequest
from servelm.agents.chat_types import content_text

from ..errors import ModelFormatError
from .sampling import SamplingParams


def require_chat_template(tokenizer: Any, where: str) -> None:
    """A clear error (at save or load, not at the first request) when the tokenizer has no chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelFormatError(f"{where}: the tokenizer has no chat template (chat_template.jinja or tokenizer_config.json "
                               "'chat_template'); set tokenizer.chat_template or save with task='text-generation'")


def render_prompt(tokenizer: Any, request: ChatCompletionRequest) -> str:
    """The prompt text for a chat request: the tokenizer's template, tools passed through, generation prompt on."""
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
    kwargs: dict[str, Any] = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs)


def prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of an already templated prompt (the template added any special tokens)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


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
