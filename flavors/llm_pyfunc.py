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
from .generation import SequenceText
from .pyfunc.wrappers import request_dict

TASK_CHAT = "llm/v1/chat"


class ChatLLMPyfunc:
    """predict / predict_stream for the chat (or text-generation) task over a flavor's batcher."""

    #: decodes the batcher's token ids (a transformers or ``tokenizers`` tokenizer)
    tokenizer: Any

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
        outputs = _Outputs(self.tokenizer, [seq for group in groups for seq in group])
        while batcher.has_work():
            outputs.step(batcher)
        # a list, one response per request, even for one request: MLflow's LLM pyfuncs answer so
        # (``model.predict(chat)[0]["choices"][0]["message"]["content"]``)
        return [self._response(group, outputs) for group in groups]

    def predict_stream(self, data: Any, params: Optional[dict[str, Any]] = None) -> Iterator[dict[str, Any]]:
        data = request_dict(data)
        if self.task != TASK_CHAT:
            raise ValueError("predict_stream needs the llm/v1/chat task")
        chat = ChatCompletionRequest.model_validate({**data, **(params or {})})
        batcher = self.new_batcher()
        outputs = _Outputs(self.tokenizer, self._add(batcher, chat))
        chunk_id, created = new_id("chatcmpl"), now_seconds()
        first = set()
        while batcher.has_work():
            for i, text, finished in outputs.step(batcher):
                delta: dict[str, Any] = {"content": text} if text else {}
                if i not in first and (text or finished):
                    delta["role"] = "assistant"
                    first.add(i)
                if delta or finished:
                    yield {
                        "id": chunk_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": self.model_name,
                        "choices": [
                            {"index": i, "delta": delta, "finish_reason": outputs.reasons[i] if finished else None}
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

    def _response(self, seqs: list[Any], outputs: _Outputs) -> dict[str, Any]:
        prompt_tokens = len(seqs[0].prompt_ids)
        completion = sum(outputs.completion_tokens(s) for s in seqs)
        return {
            "id": new_id("chatcmpl"),
            "object": "chat.completion",
            "created": now_seconds(),
            "model": self.model_name,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": outputs.text(s)},
                    "finish_reason": outputs.reason(s),
                }
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
        outputs = _Outputs(self.tokenizer, seqs)
        while batcher.has_work():
            outputs.step(batcher)
        return [outputs.text(s) for s in seqs]  # a list even for one prompt, as MLflow's text-generation pyfunc


class _Outputs:
    """The sequences of one predict call and their text, made from the batcher's token ids with their stop
    strings (the batcher does not look for them: a sequence whose text reached one is aborted here)."""

    def __init__(self, tokenizer: Any, seqs: list[Any]):
        self.texts = [SequenceText(tokenizer, s.params.stop) for s in seqs]
        self.reasons: list[Optional[str]] = [None] * len(seqs)
        self.tokens = [0] * len(seqs)  # completion tokens, up to the one that ended the text
        self._index = {id(s): i for i, s in enumerate(seqs)}

    def step(self, batcher: Batcher) -> list[tuple[int, str, bool]]:
        """One batcher step: (sequence index, new text, whether it ended) for each sequence it moved."""
        events = []
        for out in batcher.step():
            i = self._index.get(id(out.seq))
            if i is None or self.reasons[i] is not None:
                continue
            text, stopped = self.texts[i].step(out.token_ids, out.finished)
            self.tokens[i] = len(out.seq.generated)
            if stopped:
                if not out.finished:
                    batcher.abort(out.seq)
                self.reasons[i] = "stop"
            elif out.finished:
                self.reasons[i] = out.seq.finish_reason
            events.append((i, text, self.reasons[i] is not None))
        return events

    def text(self, seq: Any) -> str:
        return self.texts[self._index[id(seq)]].text

    def reason(self, seq: Any) -> Optional[str]:
        return self.reasons[self._index[id(seq)]]

    def completion_tokens(self, seq: Any) -> int:
        return self.tokens[self._index[id(seq)]]
