"""The python_function face of a transformers-flavor model: OpenAI chat in, OpenAI chat out.

A list of requests in one predict is generated as one batch (the continuous batcher, run inline).
``task="text-generation"`` keeps plain prompt -> text.
"""

from __future__ import annotations

from typing import Any, Optional

from servelm.agents import ChatCompletionRequest

from ..engine.hf_batcher import ContinuousBatcher, model_runner_factory
from ..llm_pyfunc import TASK_CHAT, ChatLLMPyfunc
from .chat import encode_chat

__all__ = ["TASK_CHAT", "TransformersPyfunc"]


class TransformersPyfunc(ChatLLMPyfunc):
    """Chat (or text-generation) predict over a loaded Hugging Face model and tokenizer."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        task: str,
        model_name: str,
        config: Optional[dict[str, Any]] = None,
        max_num_seqs: int = 64,
        quantization: Optional[str] = None,
    ):
        super().__init__(task, model_name, int(getattr(model.config, "max_position_embeddings", 0) or 2048), config)
        self.model = model
        self.tokenizer = tokenizer
        self.max_num_seqs = max_num_seqs
        # the weights laid out once; each predict gets its own cache
        self.runners = model_runner_factory(model, quantization)

    def new_batcher(self) -> ContinuousBatcher:
        return ContinuousBatcher(self.model, self.tokenizer, self.max_num_seqs, runners=self.runners)

    def chat_prompt_ids(self, chat: ChatCompletionRequest) -> list[int]:
        return encode_chat(self.tokenizer, chat)

    def text_prompt_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])
