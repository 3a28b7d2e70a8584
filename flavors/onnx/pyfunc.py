"""The python_function face of an onnx-flavor model: OpenAI chat in, OpenAI chat out, on onnxruntime-genai.

Each predict builds its own Engine on the calling thread (about a millisecond; an Engine is tied to the
thread that made it), so concurrent predicts from a server's thread pool do not share one.
"""

from __future__ import annotations

from typing import Any, Optional

from servelm.agents import ChatCompletionRequest

from ..llm_pyfunc import ChatLLMPyfunc
from .batcher import GenaiBatcher
from .runtime import GenaiModel


class OnnxPyfunc(ChatLLMPyfunc):
    """Chat (or text-generation) predict over a loaded onnxruntime-genai model."""

    def __init__(self, genai: GenaiModel, task: str, model_name: str, config: Optional[dict[str, Any]] = None):
        super().__init__(task, model_name, genai.context_length, config)
        self.genai = genai

    def new_batcher(self) -> GenaiBatcher:
        return GenaiBatcher(self.genai)

    def chat_prompt_ids(self, chat: ChatCompletionRequest) -> list[int]:
        return self.genai.chat_prompt_ids(chat)

    def text_prompt_ids(self, text: str) -> list[int]:
        return self.genai.text_prompt_ids(text)
