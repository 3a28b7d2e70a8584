"""A model runner driven without a scheduler, for benchmarks and tests that time or compare forward passes: ``rows``
sequences, row ``i`` holding its own fixed run of blocks, enough for ``length`` positions."""

from __future__ import annotations

from typing import Any

from .model_runner import Chunk, ModelRunner, StepBatch


class FixedRows:
    """``runner`` with its pools allocated for ``rows`` rows of ``length`` positions."""

    def __init__(self, runner: ModelRunner, rows: int, length: int, block_size: int = 32):
        self.runner = runner
        per_row = -(-length // block_size)
        runner.allocate(rows * per_row, block_size, rows)
        self.tables = [list(range(row * per_row, (row + 1) * per_row)) for row in range(rows)]

    def forward(self, tokens: list[int], positions: list[int], chunks: Any = ()) -> Any:
        """Decode ``tokens[i]`` at ``positions[i]`` of row ``i``, and compute each chunk, given as (row, token ids,
        start); the runner's logits [len(tokens) + len(chunks), vocab]."""
        count = len(tokens)
        return self.runner.forward(
            StepBatch(
                decode_seqs=list(range(count)),
                decode_tokens=list(tokens),
                decode_positions=list(positions),
                decode_blocks=self.tables[:count],
                chunks=[Chunk(row, list(ids), start, self.tables[row]) for row, ids, start in chunks],
            )
        )
