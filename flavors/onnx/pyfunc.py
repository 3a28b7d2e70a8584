"""The python_function face of an onnx-flavor model: OpenAI chat in, OpenAI chat out.

Each predict builds its own batcher on the calling thread (its own KV cache over the one loaded model;
onnxruntime-genai's Engine is tied to the thread that made it), so concurrent predicts from a server's
thread pool do not share one.
"""

from __future__ import annotations

from typing import Any, Optional

from servelm.agents import ChatCompletionRequest

from ..engine import Batcher
from ..llm_pyfunc import ChatLLMPyfunc
from .model import OnnxModel


class OnnxPyfunc(ChatLLMPyfunc):
    """Chat (or text-generation) predict over a loaded onnx-flavor model."""

    def __init__(self, model: OnnxModel, task: str, model_name: str, config: Optional[dict[str, Any]] = None):
        super().__init__(task, model_name, model.context_length, config)
        self.model = model
        self.tokenizer = model.prompts.tokenizer

    def new_batcher(self) -> Batcher:
        return self.model.new_batcher()

    def chat_prompt_ids(self, chat: ChatCompletionRequest) -> list[int]:
        return self.model.chat_prompt_ids(chat)

    def text_prompt_ids(self, text: str) -> list[int]:
        return self.model.text_prompt_ids(text)
