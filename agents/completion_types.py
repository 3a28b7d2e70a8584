"""OpenAI's legacy text-completions protocol types (``POST /v1/completions``): prompt in, text out."""

from __future__ import annotations

from typing import Optional, Union

from pydantic import Field, field_validator

from .chat_types import ChatParams


class CompletionRequest(ChatParams):
    """A completions request body: a prompt (text, texts, token ids, or lists of token ids) plus the
    sampling parameters chat requests have, and the completions-only fields."""

    model: Optional[str] = None
    prompt: Union[str, list[str], list[int], list[list[int]]]
    echo: Optional[bool] = None
    # an int here: how many alternatives
    logprobs: Optional[int] = Field(default=None, ge=0, le=20)  # type: ignore[assignment]
    suffix: Optional[str] = None
    best_of: Optional[int] = Field(default=None, ge=1)

    @field_validator("prompt")
    @classmethod
    def _not_empty(
        cls, prompt: Union[str, list[str], list[int], list[list[int]]]
    ) -> Union[str, list[str], list[int], list[list[int]]]:
        if isinstance(prompt, list) and not prompt:
            raise ValueError("prompt must not be an empty list")
        return prompt

    def prompts(self) -> list[Union[str, list[int]]]:
        """Each prompt of the request: a text or a list of token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if all(isinstance(p, int) for p in prompt):
            return [list(prompt)]  # type: ignore[arg-type]
        return list(prompt)  # type: ignore[arg-type]
