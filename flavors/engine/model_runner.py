"""The contract between the ``Scheduler`` and a model: a runner owns the KV cache rows and computes the
forward passes over them (``runners/llama.py`` in torch, ``runners/onnx.py`` on onnxruntime,
``runners/hf_forward.py`` over a model's own forward)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .sample.choice import RowSampling, TokenChoice


@dataclass(frozen=True)
class Chunk:
    """Prompt tokens of one sequence to compute in a step: ``token_ids`` at positions ``start ..`` of ``row``."""

    row: int
    token_ids: list[int]
    start: int


class ModelRunner(Protocol):
    """A model's forward passes over a KV cache of rows (one sequence per row, positions left-aligned)."""

    #: tokens a sequence may hold, prompt and output together
    context_length: int
    #: entries of a logits row
    vocab_size: int

    def ensure(self, rows: int, length: int) -> None:
        """Make room for ``rows`` rows of ``length`` positions each (growing, keeping what is cached)."""
        ...

    def release(self) -> None:
        """Free the cache (no sequence holds a row any more)."""
        ...

    def forward(self, tokens: list[int], positions: list[int], chunks: list[Chunk]) -> Any:
        """One step's forward pass, writing the KV of every token it computes: decode one token for each
        row ``0 .. len(tokens)-1`` at its position, and compute each prompt chunk in its row (attending
        to the positions before its start, already cached). Returns logits [len(tokens) + len(chunks),
        vocab]: the decode rows', then each chunk's last token's."""
        ...

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy the first ``length`` positions of row ``src`` to row ``dst``."""
        ...

    def swap(self, a: int, b: int, length: int) -> None:
        """Exchange the first ``length`` positions of rows ``a`` and ``b``."""
        ...

    def save_block(self, row: int, start: int, size: int) -> tuple[Any, int]:
        """A copy of positions ``start .. start+size`` of ``row`` (for the prefix cache) and its size in bytes."""
        ...

    def load_blocks(self, blocks: list[Any], row: int, start: int, length: int) -> None:
        """Write saved blocks back, one after another from position ``start`` of ``row``: their first
        ``length`` positions (the last block may be used in part)."""
        ...

    def generator(self, seed: int) -> Any:
        """A seeded random generator for one sequence's sampling."""
        ...

    def sample(self, logits: Any, rows: list[RowSampling]) -> list[TokenChoice]:
        """The next token of each row of ``logits`` [rows, vocab], each with its own parameters, history
        and grammar mask (log-probabilities where asked for)."""
        ...
