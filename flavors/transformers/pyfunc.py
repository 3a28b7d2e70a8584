"""The python_function face of a transformers-flavor model: OpenAI chat in, OpenAI chat out.

A list of requests in one predict is generated as one batch (the continuous batcher, run inline).
``task="text-generation"`` keeps plain prompt -> text.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

from servelm.agents import ChatCompletionRequest
from servelm.agents.ids import new_id, now_seconds

from ..pyfunc.wrappers import request_dict
from .batcher import ContinuousBatcher, Sequence
from .chat import prompt_ids, render_prompt, sampling_params
from .sampling import SamplingParams

TASK_CHAT = "llm/v1/chat"


class TransformersPyfunc:
    """predict / predict_stream over a loaded model and tokenizer, for the chat or text-generation task."""

    def __init__(self, model: Any, tokenizer: Any, task: str, model_name: str, config: Optional[dict[str, Any]] = None, max_num_seqs: int = 64):
        self.model = model
        self.tokenizer = tokenizer
        self.task = task
        self.model_name = model_name
        self.config = config or {}
        self.max_num_seqs = max_num_seqs
        self.context_length = int(getattr(model.config, "max_position_embeddings", 0) or 2048)

    # ------------------------------------------------------------------ predict
    def predict(self, data: Any, params: Optional[dict[str, Any]] = None) -> Any:
        data = request_dict(data)
        if self.task != TASK_CHAT:
            return self._predict_text(data, params)
        requests = data if isinstance(data, list) else [data]
        chats = [ChatCompletionRequest.model_validate({**r, **(params or {})}) for r in requests]
        batcher = ContinuousBatcher(self.model, self.tokenizer, self.max_num_seqs)
        groups = [self._add(batcher, chat) for chat in chats]
        while batcher.has_work():
            batcher.step()
        responses = [self._response(group) for group in groups]
        return responses if isinstance(data, list) else responses[0]

    def predict_stream(self, data: Any, params: Optional[dict[str, Any]] = None) -> Iterator[dict[str, Any]]:
        data = request_dict(data)
        if self.task != TASK_CHAT:
            raise ValueError("predict_stream needs the llm/v1/chat task")
        chat = ChatCompletionRequest.model_validate({**data, **(params or {})})
        batcher = ContinuousBatcher(self.model, self.tokenizer, self.max_num_seqs)
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
                    yield {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": self.model_name,
                           "choices": [{"index": i, "delta": delta, "finish_reason": out.seq.finish_reason if out.finished else None}]}

    # ------------------------------------------------------------------ helpers
    def _add(self, batcher: ContinuousBatcher, chat: ChatCompletionRequest) -> list[Sequence]:
        ids = prompt_ids(self.tokenizer, render_prompt(self.tokenizer, chat))
        params = sampling_params(chat, len(ids), self.context_length, self.config)
        seqs = []
        for choice in range(chat.n or 1):
            seeded = params if params.seed is None else SamplingParams(**{**params.__dict__, "seed": params.seed + choice})
            seqs.append(batcher.add(ids, seeded))
        return seqs

    def _response(self, seqs: list[Sequence]) -> dict[str, Any]:
        prompt_tokens = len(seqs[0].prompt_ids)
        completion = sum(len(s.generated) for s in seqs)
        return {
            "id": new_id("chatcmpl"), "object": "chat.completion", "created": now_seconds(), "model": self.model_name,
            "choices": [{"index": i, "message": {"role": "assistant", "content": s.text}, "finish_reason": s.finish_reason} for i, s in enumerate(seqs)],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion},
        }

    def _predict_text(self, data: Any, params: Optional[dict[str, Any]]) -> Any:
        prompts = data if isinstance(data, list) else [data]
        prompts = [p["prompt"] if isinstance(p, dict) else p for p in prompts]
        options = {**self.config, **(params or {})}
        batcher = ContinuousBatcher(self.model, self.tokenizer, self.max_num_seqs)
        seqs = []
        for text in prompts:
            ids = list(self.tokenizer(text)["input_ids"])
            seqs.append(batcher.add(ids, SamplingParams(max_tokens=int(options.get("max_new_tokens", options.get("max_tokens", 64))),
                                                        temperature=float(options.get("temperature", 0.0)), stop=list(options.get("stop") or []))))
        while batcher.has_work():
            batcher.step()
        outputs = [s.text for s in seqs]
        return outputs if isinstance(data, list) else outputs[0]
