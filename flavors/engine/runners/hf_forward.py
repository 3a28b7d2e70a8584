"""A ``ModelRunner`` over any Hugging Face causal LM's own forward pass: one cache object per row and one
forward call per row per step. Slow under load, but it runs every architecture transformers runs; the
transformers flavor uses it only for models ``llama.py`` does not cover (its reason is logged)."""

from __future__ import annotations

import inspect
from typing import Any

from ..model_runner import StepBatch
from ..sample.choice import RowSampling, TokenChoice
from ..sample.torch_sampler import sample_next


class HFRunner:
    """A cache object per sequence, kept by its id (the scheduler's blocks bound how many tokens they hold
    together). No prefix sharing: the scheduler runs it without a prefix cache."""

    paged = False

    def __init__(self, model: Any):
        import torch

        self.torch = torch
        self.model = model
        self.device = next(model.parameters()).device
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.context_length = int(getattr(config, "max_position_embeddings", 0) or 2048)
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        itemsize = next(model.parameters()).element_size()
        self._token_bytes = 2 * config.num_hidden_layers * kv_heads * head_dim * itemsize
        self.caches: dict[int, Any] = {}
        # transformers 5.24 renamed forward's past_key_values to cache (the old name warns): use what this version takes
        self._cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def block_bytes(self, block_size: int) -> int:
        return self._token_bytes * block_size

    def allocate(self, num_blocks: int, block_size: int, max_seqs: int) -> None:
        pass

    def free(self, seq_id: int) -> None:
        self.caches.pop(seq_id, None)

    def forget(self, blocks: list[int]) -> None:
        pass

    def forward(self, batch: StepBatch) -> Any:
        """Each decode row, then each chunk, through the model one at a time."""
        logits = [
            self._forward(self.caches[seq], [token], position)
            for seq, token, position in zip(batch.decode_seqs, batch.decode_tokens, batch.decode_positions)
        ]
        logits += [self.prefill(chunk.seq_id, chunk.token_ids, chunk.start) for chunk in batch.chunks]
        return self.torch.cat(logits)  # [rows + chunks, vocab]

    def prefill(self, seq_id: int, token_ids: list[int], start: int) -> Any:
        from transformers import DynamicCache

        if start == 0:
            self.caches[seq_id] = DynamicCache()
        return self._forward(self.caches[seq_id], token_ids, start)  # [1, vocab]

    def _forward(self, cache: Any, token_ids: list[int], start: int) -> Any:
        torch = self.torch
        with torch.inference_mode():
            ids = torch.tensor([token_ids], device=self.device)  # [1, tokens]
            positions = torch.arange(start, start + len(token_ids), device=self.device)[None]
            out = self.model(
                input_ids=ids, position_ids=positions, use_cache=True, logits_to_keep=1, **{self._cache_kwarg: cache}
            )
            return out.logits[:, -1, :]

    def generator(self, seed: int) -> Any:
        return self.torch.Generator(device=self.device).manual_seed(seed % 2**64)

    def sample(self, logits: Any, rows: list[RowSampling]) -> list[TokenChoice]:
        return sample_next(logits, rows)
