"""Iteration-level (continuous) batching over a Hugging Face causal LM's forward pass and KV cache.

Sequences join the running batch between decode steps and leave as soon as they finish: each ``step``
prefills the newcomers (one left-padded batch), merges their KV cache into the running one, then runs one
decode step for every running sequence. Rows have their own positions (RoPE is applied before caching, so
a row's cache does not depend on its column) and a 2-D attention mask hides each row's left padding.
The KV tensors are [batch, kv_heads, columns, head_dim] per layer; columns no row uses are trimmed.
Synchronous and single-threaded: the server drives it from one engine thread, pyfunc predict inline.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional

from .sampling import SamplingParams, sample_next
from ..generation import IncrementalDetokenizer, StepOutput, StopChecker
from ..generation import Sequence as BaseSequence


@dataclass
class Sequence(BaseSequence):
    """One generation on the transformers batcher."""

    detokenizer: Optional[IncrementalDetokenizer] = None
    generator: Any = None  # torch.Generator when seeded


class ContinuousBatcher:
    """Runs many sequences through one model, a token per step each, with per-sequence sampling."""

    def __init__(self, model: Any, tokenizer: Any, max_num_seqs: int = 64, max_prefill_seqs: Optional[int] = None):
        import torch

        self.torch = torch
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.max_num_seqs = max_num_seqs
        self.max_prefill_seqs = max_prefill_seqs or max_num_seqs
        self.context_length = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (min(self.eos_ids) if self.eos_ids else 0)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._ids = itertools.count(1)
        self._cache: Any = None  # DynamicCache of the running rows
        self._mask: Any = None  # [batch, columns] 1 where a row has a real token
        self._positions: Any = None  # [batch] next position per row
        self._pending: list[int] = []  # per running row: the sampled token not yet in the cache
        self.last_batch_size = 0

    # ------------------------------------------------------------------ requests
    def add(self, prompt_ids: list[int], params: SamplingParams) -> Sequence:
        """Queue a sequence; it joins the batch at the next step with room."""
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        if len(prompt_ids) >= self.context_length:
            raise ValueError(f"the prompt has {len(prompt_ids)} tokens; this model's context is {self.context_length}")
        seq = Sequence(list(prompt_ids), params, next(self._ids))
        seq.detokenizer = IncrementalDetokenizer(self.tokenizer)
        seq.stopper = StopChecker(params.stop)
        if params.seed is not None and params.temperature > 0:
            seq.generator = self.torch.Generator().manual_seed(params.seed)
        self.waiting.append(seq)
        return seq

    def abort(self, seq: Sequence) -> None:
        """Stop a sequence; its row is freed at the next step."""
        seq.aborted = True

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # ------------------------------------------------------------------ the step
    def step(self) -> list[StepOutput]:
        """Admit newcomers (prefill), then one decode step for all running sequences."""
        outputs: list[StepOutput] = []
        self._drop_aborted()
        room = self.max_num_seqs - len(self.running)
        newcomers = []
        while self.waiting and len(newcomers) < min(room, self.max_prefill_seqs):
            seq = self.waiting.popleft()
            if not seq.aborted:
                newcomers.append(seq)
        with self.torch.inference_mode():
            if newcomers:
                outputs += self._prefill(newcomers)
            if self.running:
                outputs += self._decode()
        self._drop_finished()
        return outputs

    def _prefill(self, seqs: list[Sequence]) -> list[StepOutput]:
        torch = self.torch
        longest = max(len(s.prompt_ids) for s in seqs)
        ids = torch.full((len(seqs), longest), self.pad_id, dtype=torch.long)  # [new, longest]
        mask = torch.zeros((len(seqs), longest), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, longest - len(seq.prompt_ids) :] = torch.tensor(seq.prompt_ids)
            mask[row, longest - len(seq.prompt_ids) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        from transformers import DynamicCache

        cache = DynamicCache()
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), position_ids=positions.to(self.device),
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        tokens = sample_next(out.logits[:, -1, :], [s.params for s in seqs], [s.generator for s in seqs])
        next_pos = torch.tensor([len(s.prompt_ids) for s in seqs])
        self._merge(out.past_key_values, mask.to(self.device), next_pos.to(self.device))
        self.running += seqs
        self.last_batch_size = len(seqs)
        results = []
        for seq, token in zip(seqs, tokens):
            self._pending.append(token)
            results.append(self._accept(seq, token))
        return results

    def _decode(self) -> list[StepOutput]:
        torch = self.torch
        live = [i for i, s in enumerate(self.running) if s.finish_reason is None]
        if len(live) != len(self.running):
            self._keep(live)
        if not self.running:
            return []
        batch = len(self.running)
        ids = torch.tensor(self._pending, dtype=torch.long, device=self.device).unsqueeze(1)  # [batch, 1]
        self._mask = torch.cat([self._mask, torch.ones((batch, 1), dtype=torch.long, device=self.device)], dim=1)
        out = self.model(input_ids=ids, attention_mask=self._mask, position_ids=self._positions.unsqueeze(1),
                         past_key_values=self._cache, use_cache=True)
        self._cache = out.past_key_values
        self._positions = self._positions + 1
        tokens = sample_next(out.logits[:, -1, :], [s.params for s in self.running], [s.generator for s in self.running])
        self.last_batch_size = batch
        self._pending = tokens
        return [self._accept(seq, token) for seq, token in zip(self.running, tokens)]

    def _accept(self, seq: Sequence, token: int) -> StepOutput:
        """Record a sampled token: text, stop strings, EOS and length limits."""
        assert seq.detokenizer is not None and seq.stopper is not None
        if token in self.eos_ids and not seq.params.ignore_eos:
            seq.finish_reason = "stop"
            return StepOutput(seq, self._final_text(seq, flush_tokens=True), True)
        seq.generated.append(token)
        text, hit = seq.stopper.feed(seq.detokenizer.add(token))
        seq.text += text
        if hit:
            seq.finish_reason = "stop"
            return StepOutput(seq, text, True)
        if len(seq.generated) >= seq.params.max_tokens or len(seq.prompt_ids) + len(seq.generated) >= self.context_length:
            seq.finish_reason = "length"
            return StepOutput(seq, text + self._final_text(seq, flush_tokens=True), True)
        return StepOutput(seq, text, False)

    def _final_text(self, seq: Sequence, flush_tokens: bool) -> str:
        assert seq.detokenizer is not None and seq.stopper is not None
        tail, hit = seq.stopper.feed(seq.detokenizer.flush()) if flush_tokens else ("", False)
        rest = "" if hit else seq.stopper.flush()
        seq.text += tail + rest
        return tail + rest

    # ------------------------------------------------------------------ batch bookkeeping
    def _merge(self, cache: Any, mask: Any, positions: Any) -> None:
        """Append newcomer rows to the running cache, left-padding whichever side is shorter."""
        torch = self.torch
        if self._cache is None or not self.running:
            self._cache, self._mask, self._positions = cache, mask, positions
            return
        old_cols, new_cols = self._mask.shape[1], mask.shape[1]
        width = max(old_cols, new_cols)
        for old_layer, new_layer in zip(self._cache.layers, cache.layers):
            old_layer.keys = torch.cat([_pad_left(old_layer.keys, width), _pad_left(new_layer.keys, width)], dim=0)
            old_layer.values = torch.cat([_pad_left(old_layer.values, width), _pad_left(new_layer.values, width)], dim=0)
        self._mask = torch.cat([_pad_left_2d(self._mask, width), _pad_left_2d(mask, width)], dim=0)
        self._positions = torch.cat([self._positions, positions])

    def _keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` of the batch, then drop leading columns no remaining row uses."""
        torch = self.torch
        self.running = [self.running[i] for i in rows]
        self._pending = [self._pending[i] for i in rows]
        if not rows:
            self._cache = self._mask = self._positions = None
            return
        index = torch.tensor(rows, device=self.device)
        mask = self._mask.index_select(0, index)
        used = mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else 0
        self._mask = mask[:, first:]
        self._positions = self._positions.index_select(0, index)
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, first:]
            layer.values = layer.values.index_select(0, index)[:, :, first:]

    def _drop_aborted(self) -> None:
        for seq in self.running:
            if seq.aborted and seq.finish_reason is None:
                seq.finish_reason = "abort"
        self._drop_finished()

    def _drop_finished(self) -> None:
        if any(s.finish_reason is not None for s in self.running):
            self._keep([i for i, s in enumerate(self.running) if s.finish_reason is None])


def _pad_left(tensor: Any, width: int) -> Any:
    """Left-pad [batch, heads, columns, dim] with zeros to ``width`` columns."""
    import torch

    missing = width - tensor.shape[2]
    if missing <= 0:
        return tensor
    pad = torch.zeros((tensor.shape[0], tensor.shape[1], missing, tensor.shape[3]), dtype=tensor.dtype, device=tensor.device)
    return torch.cat([pad, tensor], dim=2)


def _pad_left_2d(mask: Any, width: int) -> Any:
    import torch

    missing = width - mask.shape[1]
    if missing <= 0:
        return mask
    return torch.cat([torch.zeros((mask.shape[0], missing), dtype=mask.dtype, device=mask.device), mask], dim=1)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids
