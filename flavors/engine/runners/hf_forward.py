"""A ``ModelRunner`` over any Hugging Face causal LM's own forward pass: one cache object per row and one
forward call per row per step. Slow under load, but it runs every architecture transformers runs; the
transformers flavor uses it only for models ``llama.py`` does not cover (its reason is logged)."""

from __future__ import annotations

import inspect
from typing import Any

from ..model_runner import Chunk
from ..sample.choice import RowSampling, TokenChoice
from ..sample.torch_sampler import sample_next


class HFRunner:
    """Rows are ``DynamicCache`` objects: moving a row moves a reference. No prefix blocks (the
    scheduler runs it without a prefix cache)."""

    def __init__(self, model: Any):
        import torch

        self.torch = torch
        self.model = model
        self.device = next(model.parameters()).device
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.context_length = int(getattr(config, "max_position_embeddings", 0) or 2048)
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.caches: list[Any] = []
        # transformers 5.24 renamed forward's past_key_values to cache (the old name warns): use what this version takes
        self._cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def ensure(self, rows: int, length: int) -> None:
        self.caches += [None] * (rows - len(self.caches))

    def release(self) -> None:
        self.caches = []

    def forward(self, tokens: list[int], positions: list[int], chunks: list[Chunk]) -> Any:
        """Each decode row, then each chunk, through the model one at a time."""
        logits = [
            self._forward(self.caches[row], [token], position)
            for row, (token, position) in enumerate(zip(tokens, positions))
        ]
        logits += [self.prefill(chunk.row, chunk.token_ids, chunk.start) for chunk in chunks]
        return self.torch.cat(logits)  # [rows + chunks, vocab]

    def prefill(self, row: int, token_ids: list[int], start: int) -> Any:
        from transformers import DynamicCache

        if start == 0:
            self.caches[row] = DynamicCache()
        return self._forward(self.caches[row], token_ids, start)  # [1, vocab]

    def _forward(self, cache: Any, token_ids: list[int], start: int) -> Any:
        torch = self.torch
        with torch.inference_mode():
            ids = torch.tensor([token_ids], device=self.device)  # [1, tokens]
            positions = torch.arange(start, start + len(token_ids), device=self.device)[None]
            out = self.model(
                input_ids=ids, position_ids=positions, use_cache=True, logits_to_keep=1, **{self._cache_kwarg: cache}
            )
            return out.logits[:, -1, :]

    def move(self, src: int, dst: int, length: int) -> None:
        self.caches[dst] = self.caches[src]

    def swap(self, a: int, b: int, length: int) -> None:
        self.caches[a], self.caches[b] = self.caches[b], self.caches[a]

    def save_block(self, row: int, start: int, size: int) -> tuple[Any, int]:
        raise NotImplementedError("HFRunner keeps no prefix blocks")

    def load_blocks(self, blocks: list[Any], row: int, start: int, length: int) -> None:
        raise NotImplementedError("HFRunner keeps no prefix blocks")

    def generator(self, seed: int) -> Any:
        return self.torch.Generator(device=self.device).manual_seed(seed % 2**64)

    def sample(self, logits: Any, rows: list[RowSampling]) -> list[TokenChoice]:
        return sample_next(logits, rows)
