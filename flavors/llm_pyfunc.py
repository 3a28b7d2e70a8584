"""The python_function face shared by the LLM flavors: OpenAI chat request in, OpenAI chat response out.

A flavor supplies its batcher (``generation.Batcher``, the contract the serving engines drive too) and its prompt
encoding; everything a client sees — n choices, usage in tokens, finish reasons,
streamed chunks, a list of requests generated as one batch, ``text-generation`` prompt -> text — is here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Optional

from servelm.agents import ChatCompletionRequest
from servelm.agents.ids import new_id, now_seconds

from .engine import Batcher, SamplingParams, sampling_params
from .pyfunc.wrappers import request_dict

TASK_CHAT = "llm/v1/chat"


class ChatLLMPyfunc:
    """predict / predict_stream for the chat (or text-generation) task over a flavor's batcher."""

    def __init__(self, task: str, model_name: str, context_length: int, config: Optional[dict[str, Any]] = None):
        self.task = task
        self.model_name = model_name
        self.context_length = context_length
        self.config = config or {}

    # ------------------------------------------------------------------ what a flavor provides
    def new_batcher(self) -> Batcher:
        """A fresh batcher for one predict call (created on the calling thread)."""
        raise NotImplementedError

    def chat_prompt_ids(self, chat: ChatCompletionRequest) -> list[int]:
        """Token ids of the chat request rendered with the model's chat template."""
        raise NotImplementedError

    def text_prompt_ids(self, text: str) -> list[int]:
        """Token ids of a plain prompt (text-generation task)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ predict
    def predict(self, data: Any, params: Optional[dict[str, Any]] = None) -> Any:
        data = request_dict(data)
        if self.task != TASK_CHAT:
            return self._predict_text(data, params)
        requests = data if isinstance(data, list) else [data]
        chats = [ChatCompletionRequest.model_validate({**r, **(params or {})}) for r in requests]
        batcher = self.new_batcher()
        groups = [self._add(batcher, chat) for chat in chats]
        while batcher.has_work():
            batcher.step()
        # a list, one response per request, even for one request: MLflow's LLM pyfuncs answer so
        # (``model.predict(chat)[0]["choices"][0]["message"]["content"]``)
        return [self._response(group) for group in groups]

    def predict_stream(self, data: Any, params: Optional[dict[str, Any]] = None) -> Iterator[dict[str, Any]]:
        data = request_dict(data)
        if self.task != TASK_CHAT:
            raise ValueError("predict_stream needs the llm/v1/chat task")
        chat = ChatCompletionRequest.model_validate({**data, **(params or {})})
        batcher = self.new_batcher()
        seqs = self._add(batcher, chat)
        index = {id(s): i for i, s in enumerate(seqs)}
        chunk_id, created = new_id("chatcmpl"), now_seconds()
        first = set()
        while batcher.has_work():
            for out in batcher.step():
                i = index[id(out.seq)]
                delta: dict[str, Any] = {"content": out.text} if out.text else {}
                if i not in first and (out.text or out.finished):
                    delta["role"] = "assistant"
                    first.add(i)
                if delta or out.finished:
                    yield {
                        "id": chunk_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": self.model_name,
                        "choices": [
                            {
                                "index": i,
                                "delta": delta,
                                "finish_reason": out.seq.finish_reason if out.finished else None,
                            }
                        ],
                    }

    # ------------------------------------------------------------------ helpers
    def _add(self, batcher: Batcher, chat: ChatCompletionRequest) -> list[Any]:
        ids = self.chat_prompt_ids(chat)
        params = sampling_params(chat, len(ids), self.context_length, self.config)
        seqs = []
        for choice in range(chat.n or 1):
            seeded = (
                params if params.seed is None else SamplingParams(**{**params.__dict__, "seed": params.seed + choice})
            )
            seqs.append(batcher.add(ids, seeded))
        return seqs

    def _response(self, seqs: list[Any]) -> dict[str, Any]:
        prompt_tokens = len(seqs[0].prompt_ids)
        completion = sum(len(s.generated) for s in seqs)
        return {
            "id": new_id("chatcmpl"),
            "object": "chat.completion",
            "created": now_seconds(),
            "model": self.model_name,
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": s.text}, "finish_reason": s.finish_reason}
                for i, s in enumerate(seqs)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion,
            },
        }

    def _predict_text(self, data: Any, params: Optional[dict[str, Any]]) -> Any:
        prompts = data if isinstance(data, list) else [data]
        prompts = [p["prompt"] if isinstance(p, dict) else p for p in prompts]
        options = {**self.config, **(params or {})}
        batcher = self.new_batcher()
        seqs = []
        for text in prompts:
            seqs.append(
                batcher.add(
                    self.text_prompt_ids(text),
                    SamplingParams(
                        max_tokens=int(options.get("max_new_tokens", options.get("max_tokens", 64))),
                        temperature=float(options.get("temperature", 0.0)),
                        stop=list(options.get("stop") or []),
                    ),
                )
            )
        while batcher.has_work():
            batcher.step()
        return [s.text for s in seqs]  # a list even for one prompt, as MLflow's text-generation pyfunc
