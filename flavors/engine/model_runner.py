"""The contract between the ``Scheduler`` and a model: the scheduler owns the KV cache's blocks (which sequence
holds which, ``kv_cache/blocks.py``); a runner holds their memory and computes the forward passes over them
(``runners/llama.py`` in torch, ``runners/onnx.py`` on onnxruntime, ``runners/hf_forward.py`` over a model's own
forward)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .sample.choice import RowSampling, TokenChoice


@dataclass(frozen=True)
class Chunk:
    """Prompt tokens of one sequence to compute in a step: ``token_ids`` at positions ``start ..``, written into the
    blocks of its block table ``blocks`` (which hold its earlier positions)."""

    seq_id: int
    token_ids: list[int]
    start: int
    blocks: list[int]


@dataclass
class StepBatch:
    """One step's work: a token for each decoding sequence (``decode_tokens[i]`` at ``decode_positions[i]`` of
    sequence ``decode_seqs[i]``, whose block table is ``decode_blocks[i]``), then prompt ``chunks``. ``copies``
    (source block, target block, positions) are made before the pass: a cached block's leading positions given to
    a prompt that starts with them."""

    decode_seqs: list[int] = field(default_factory=list)
    decode_tokens: list[int] = field(default_factory=list)
    decode_positions: list[int] = field(default_factory=list)
    decode_blocks: list[list[int]] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)
    copies: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.decode_tokens) + len(self.chunks)


class ModelRunner(Protocol):
    """A model's forward passes over a paged KV cache (or, where ``paged`` is False, over a cache of its own kept
    per sequence, sized by the same blocks)."""

    #: tokens a sequence may hold, prompt and output together
    context_length: int
    #: entries of a logits row
    vocab_size: int
    #: whether the KV lives in the scheduler's blocks (what prefix sharing and block copies need)
    paged: bool

    def block_bytes(self, block_size: int) -> int:
        """Bytes one block of ``block_size`` positions takes over every layer, keys and values."""
        ...

    def allocate(self, num_blocks: int, block_size: int, max_seqs: int) -> None:
        """Set up the pools of ``num_blocks`` blocks for at most ``max_seqs`` sequences at once (before the first
        forward; again with the same sizes: nothing)."""
        ...

    def forward(self, batch: StepBatch) -> Any:
        """One step's forward pass, writing the KV of every token it computes at its position of its sequence's
        blocks: decode one token for each decoding sequence, and compute each prompt chunk (attending to the
        positions before its start, already cached). Returns logits [batch.rows, vocab]: the decode rows', then
        each chunk's last token's."""
        ...

    def free(self, seq_id: int) -> None:
        """Sequence ``seq_id`` is gone (finished, aborted or preempted): drop anything kept for it."""
        ...

    def forget(self, blocks: list[int]) -> None:
        """``blocks`` hold nothing anyone will read: their memory may go back to the system (an idle engine)."""
        ...

    def generator(self, seed: int) -> Any:
        """A seeded random generator for one sequence's sampling."""
        ...

    def sample(self, logits: Any, rows: list[RowSampling]) -> list[TokenChoice]:
        """The next token of each row of ``logits`` [rows, vocab], each with its own parameters, history
        and grammar mask (log-probabilities where asked for)."""
        ...
