"""Rendering a model's Jinja chat template without transformers (for runtimes that do not need it):
the same sandboxed environment and helpers transformers gives templates (``raise_exception``,
``tojson``, ``strftime_now``, trimmed blocks), with the tokenizer's special tokens as variables."""

from __future__ import annotations

import datetime
import functools
import json
import os
from typing import Any, Optional


@functools.lru_cache(maxsize=8)
def _compiled(source: str) -> Any:
    try:
        import jinja2
        import jinja2.exceptions
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ImportError("rendering chat templates needs jinja2: pip install jinja2") from None

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        value: Any,
        ensure_ascii: bool = False,
        indent: Optional[int] = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env.from_string(source)


class ChatTemplate:
    """A folder's chat template (``chat_template.jinja``, else ``tokenizer_config.json``'s) and the
    special tokens templates refer to."""

    def __init__(self, source: str, special_tokens: dict[str, Any]):
        self.source = source
        self.special_tokens = special_tokens

    @classmethod
    def from_folder(cls, folder: str) -> Optional[ChatTemplate]:
        """The template of a tokenizer folder, or None when it has none."""
        config: dict[str, Any] = {}
        config_path = os.path.join(folder, "tokenizer_config.json")
        if os.path.isfile(config_path):
            with open(config_path) as f:
                config = json.load(f)
        source = None
        template_path = os.path.join(folder, "chat_template.jinja")
        if os.path.isfile(template_path):
            with open(template_path) as f:
                source = f.read()
        elif isinstance(config.get("chat_template"), str):
            source = config["chat_template"]
        if not source:
            return None
        special = {name: _token_text(config.get(name)) for name in ("bos_token", "eos_token", "pad_token", "unk_token")}
        return cls(source, special)

    def render(
        self,
        messages: list[dict[str, Any]],
        tools: Optional[list[dict[str, Any]]] = None,
        add_generation_prompt: bool = True,
    ) -> str:
        """The prompt text for ``messages`` (and ``tools``), as transformers' ``apply_chat_template`` renders it."""
        return str(
            _compiled(self.source).render(
                messages=messages, tools=tools, add_generation_prompt=add_generation_prompt, **self.special_tokens
            )
        )


def _token_text(value: Any) -> Optional[str]:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None
