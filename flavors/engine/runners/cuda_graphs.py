"""Decode steps replayed as CUDA graphs: a small model's decode step on a GPU is a few hundred kernel launches of a
few microseconds each, so launching them from Python costs more than running them. A graph records one step's
launches once per batch size and replays them with one call.

A graph replays fixed addresses and shapes, so its inputs live in static device buffers: a step of ``rows`` decoding
sequences runs the graph of the smallest recorded size at least ``rows``, the rows past ``rows`` padded with a dummy
token whose key and value go to a scratch block no sequence owns and whose attention reads that block alone. Block
tables are as wide as the longest context. Graphs are recorded on first use of each size; a recording that fails
leaves that runner on its eager steps (logged).
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np

from ..model_runner import StepBatch

log = logging.getLogger("servelm.engine")

#: the batch sizes a graph is recorded for (then the runner's most sequences)
SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)


class DecodeGraphs:
    """Graphs of ``runner.device_decode`` for up to ``max_rows`` rows. ``record=False`` runs the same static buffers
    eagerly (what the tests do where there is no GPU)."""

    def __init__(self, runner: Any, max_rows: int, max_blocks: int, scratch: int, record: bool = True):
        torch = runner.torch
        device = runner.w.device
        self.runner, self.torch, self.record, self.scratch = runner, torch, record, scratch
        self.max_rows = max_rows
        self.sizes = sorted({s for s in SIZES if s < max_rows} | {max_rows})
        self.ids = torch.zeros(max_rows, dtype=torch.long, device=device)
        self.where = torch.zeros(max_rows, dtype=torch.long, device=device)
        self.into_block = torch.full((max_rows,), scratch, dtype=torch.long, device=device)
        self.into_offset = torch.zeros(max_rows, dtype=torch.long, device=device)
        self.seqs = torch.arange(max_rows, dtype=torch.int32, device=device)
        self.tables = torch.full((max_rows, max_blocks), scratch, dtype=torch.int32, device=device)
        self.lengths = torch.ones(max_rows, dtype=torch.int32, device=device)
        self.graphs: dict[int, tuple[Any, Any]] = {}  # size -> (graph, its logits [size, vocab])
        self.pool: Any = None
        self.broken = False

    def applies(self, batch: StepBatch) -> bool:
        """Whether ``batch`` is a decode step these graphs take."""
        return not self.broken and not batch.chunks and 0 < len(batch.decode_tokens) <= self.max_rows

    def run(self, batch: StepBatch, block_size: int) -> Optional[Any]:
        """Logits [rows, vocab] of a decode-only step (None where recording failed: the caller steps eagerly)."""
        torch = self.torch
        rows = len(batch.decode_tokens)
        size = next(s for s in self.sizes if s >= rows)
        width = self.tables.shape[1]
        tables = np.full((size, width), self.scratch, np.int32)  # [size, blocks]
        for i, table in enumerate(batch.decode_blocks):
            tables[i, : len(table)] = table
        positions = np.zeros(size, np.int64)
        positions[:rows] = batch.decode_positions
        ids = np.zeros(size, np.int64)
        ids[:rows] = batch.decode_tokens
        into_block = tables[np.arange(size), positions // block_size].astype(np.int64)
        into_block[rows:] = self.scratch
        lengths = positions.astype(np.int32) + 1
        self.ids[:size].copy_(torch.from_numpy(ids))
        self.where[:size].copy_(torch.from_numpy(positions))
        self.into_block[:size].copy_(torch.from_numpy(into_block))
        self.into_offset[:size].copy_(torch.from_numpy(positions % block_size))
        self.tables[:size].copy_(torch.from_numpy(tables))
        self.lengths[:size].copy_(torch.from_numpy(lengths))
        if not self.record:
            return self._step(size)[:rows]
        if size not in self.graphs:
            try:
                self.graphs[size] = self._recorded(size)
            except Exception as exc:  # a model or kernel that cannot be recorded: eager steps from now on
                log.warning("decode steps run eagerly: recording a CUDA graph of %d rows failed (%s)", size, exc)
                self.broken = True
                return None
        graph, logits = self.graphs[size]
        graph.replay()
        return logits[:rows].clone()

    def _step(self, size: int) -> Any:
        return self.runner.device_decode(
            self.ids[:size],
            self.where[:size],
            self.into_block[:size],
            self.into_offset[:size],
            self.seqs[:size],
            self.tables[:size],
            self.lengths[:size],
        )

    def _recorded(self, size: int) -> tuple[Any, Any]:
        torch = self.torch
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up: kernels compiled and autotuned outside the recording
                self._step(size)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            logits = self._step(size)
        self.pool = graph.pool()
        return graph, logits
