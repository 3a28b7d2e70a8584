"""The onnx engine's model runner on CPU: onnxruntime driven directly on the exported decoder (its
past key/value inputs), under the shared continuous-batching scheduler.

onnxruntime-genai's own Engine batches at most 4 requests at a time on CPU exports and holds the GIL
while it runs; here the scheduler batches every running sequence each step. The KV cache is numpy
buffers per layer, [rows, kv_heads, positions, head_dim], written in place, so a step copies no cache.
Two ways to run the export (``OrtDecoder``'s ``kv_cache_dtype``):

- cut at its attention nodes (``onnx_layered.py``): a bf16 cache, servelm's kernels between the pieces,
  and every token of a step (decode rows and prompt chunks) through the pieces together;
- the whole graph: the cache in the export's dtype, bound to the session as both past and present (the
  exported GroupQueryAttention writes each new position in place, reading each row's own length from its
  attention mask); the decode rows in one call, each prompt chunk in its own.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import numpy as np

from ...cache import default_cache_dir
from ...errors import ModelFormatError
from ...onnx.last_token import last_token_decoder
from ..kv_cache.rows import SequenceRows
from ..memory import block_runs, release_blocks, zeroed_array
from ..model_runner import StepBatch
from ..sample.choice import RowSampling, TokenChoice
from ..sample.numpy_sampler import numpy_generator, sample_numpy
from .onnx_layered import LayeredDecoder, LayeredUnavailable

log = logging.getLogger("servelm.onnx")
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


KV_CACHE_DTYPES = ("auto", "bfloat16", "float32")


class OrtDecoder:
    """An exported decoder opened for the runner: its sessions, input and output names, cache shape and
    dtype (shared by every runner of the model; read-only).

    ``kv_cache_dtype``: "bfloat16" cuts the graph at its attention nodes and runs servelm's kernels over a
    bf16 cache between the pieces (``onnx_layered.py``); "float32" runs the whole graph, its own attention
    over a cache in the export's dtype; "auto" (the default) the first where it can run (a CPU with
    avx512_bf16, a model builder decoder with head size a multiple of 32, numba installed), else the second.
    """

    def __init__(
        self,
        genai_dir: str,
        config: dict[str, Any],
        threads: int,
        cache_dir: Optional[str] = None,
        kv_cache_dtype: Optional[str] = None,
    ):
        import onnxruntime as ort

        self.ort = ort
        decoder = config["model"]["decoder"]
        names = decoder["inputs"]
        outputs = decoder["outputs"]
        self.layers = int(decoder["num_hidden_layers"])
        self.kv_heads = int(decoder.get("num_key_value_heads") or decoder["num_attention_heads"])
        self.head_dim = int(decoder["head_size"])
        self.context_length = int(config["model"].get("context_length") or 2048)
        self.vocab_size = int(config["model"]["vocab_size"])
        self.input_ids, self.attention_mask = names["input_ids"], names["attention_mask"]
        self.past = [(names["past_key_names"] % i, names["past_value_names"] % i) for i in range(self.layers)]
        self.present = [
            (outputs["present_key_names"] % i, outputs["present_value_names"] % i) for i in range(self.layers)
        ]
        self.logits = outputs["logits"]
        model_path = os.path.join(genai_dir, decoder["filename"])
        cache_dir = cache_dir or default_cache_dir()
        self.layered = self._layered(model_path, cache_dir, threads, kv_cache_dtype or "auto")
        if self.layered is not None:
            self.cache_dtype: Any = np.uint16  # bf16 bits
            self.position_ids = None
            return
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        model_path = last_token_decoder(model_path, self.logits, cache_dir) or model_path
        self.session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.cache_dtype = _DTYPES.get(inputs[self.past[0][0]].type, np.float32)
        self.position_ids = names.get("position_ids") if names.get("position_ids") in inputs else None

    def _layered(self, model_path: str, cache_dir: str, threads: int, kv_cache_dtype: str) -> Optional[LayeredDecoder]:
        if kv_cache_dtype not in KV_CACHE_DTYPES:
            choices = ", ".join(KV_CACHE_DTYPES)
            raise ModelFormatError(f"kv_cache_dtype {kv_cache_dtype!r}: the onnx engine takes {choices}")
        if kv_cache_dtype == "float32":
            return None
        try:
            return LayeredDecoder.open(model_path, self.logits, cache_dir, self.head_dim, threads)
        except LayeredUnavailable as exc:
            if kv_cache_dtype == "bfloat16":
                raise ModelFormatError(f"{model_path}: no bf16 KV cache here: {exc}") from None
            log.info("%s: runs as one graph, its own attention over a cache in its dtype (%s)", model_path, exc)
            return None


class OrtRunner:
    """A ``ModelRunner`` over an ``OrtDecoder``: on a cut decoder, paged pools per layer (keys and values [blocks,
    kv_heads, block_size, head_dim], bf16 bits) read through block tables by servelm's kernels; on the whole graph,
    rows of its own (``SequenceRows``, bound to the session in place)."""

    def __init__(self, decoder: OrtDecoder):
        self.d = decoder
        self.vocab_size = decoder.vocab_size
        self.context_length = decoder.context_length
        self.paged = decoder.layered is not None
        self.keys: list[np.ndarray] = []
        self.values: list[np.ndarray] = []
        self.rows = SequenceRows(
            decoder.layers, decoder.kv_heads, decoder.head_dim, decoder.context_length, decoder.cache_dtype
        )

    def block_bytes(self, block_size: int) -> int:
        d = self.d
        return 2 * d.layers * d.kv_heads * block_size * d.head_dim * np.dtype(d.cache_dtype).itemsize

    def allocate(self, num_blocks: int, block_size: int, max_seqs: int) -> None:
        layered = self.d.layered
        if layered is None or (self.keys and self.keys[0].shape[::2] == (num_blocks, block_size)):
            return
        d = self.d
        shape = (num_blocks, d.kv_heads, block_size, d.head_dim)
        self.keys = [zeroed_array(shape, d.cache_dtype) for _ in range(d.layers)]
        self.values = [zeroed_array(shape, d.cache_dtype) for _ in range(d.layers)]
        layered.attention_for(block_size)

    def free(self, seq_id: int) -> None:
        if not self.paged:
            self.rows.free(seq_id)

    def forget(self, blocks: list[int]) -> None:
        runs = block_runs(blocks)
        for pool in self.keys + self.values:
            release_blocks(pool, runs)

    # ------------------------------------------------------------------ forward passes
    def forward(self, batch: StepBatch) -> Any:
        """On a cut decoder, every token of the step together; else the decode rows in one session run, then
        each chunk in its own (the whole graph takes one length per call)."""
        layered = self.d.layered
        chunks = batch.chunks
        rows = len(batch.decode_tokens)
        if layered is not None:
            for source, target, count in batch.copies:
                for pool in self.keys + self.values:
                    pool[target, :, :count] = pool[source, :, :count]
            tables_list = batch.decode_blocks + [c.blocks for c in chunks]
            tables = np.zeros((len(tables_list), max(len(t) for t in tables_list)), np.int64)  # [sequences, blocks]
            for i, table in enumerate(tables_list):
                tables[i, : len(table)] = table
            ids = batch.decode_tokens + [t for c in chunks for t in c.token_ids]
            seqs = list(range(rows)) + [rows + i for i, c in enumerate(chunks) for _ in c.token_ids]
            where = batch.decode_positions + [p for c in chunks for p in range(c.start, c.start + len(c.token_ids))]
            last, end = list(range(rows)), rows
            for chunk in chunks:
                end += len(chunk.token_ids)
                last.append(end - 1)
            return layered.forward(
                np.asarray(ids, np.int64),
                np.asarray(seqs, np.int64),
                tables,
                np.asarray(where, np.int64),
                last,
                self.keys,
                self.values,
            )  # [rows + chunks, vocab]
        parts = [self.decode(batch.decode_seqs, batch.decode_tokens, batch.decode_positions)] if rows else []
        for chunk in chunks:
            row = self.rows.row(chunk.seq_id, chunk.start + len(chunk.token_ids))
            parts.append(self.prefill(row, chunk.token_ids, chunk.start))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)  # [rows + chunks, vocab]

    def prefill(self, row: int, token_ids: list[int], start: int) -> Any:
        count = len(token_ids)
        mask = np.ones((1, start + count), np.int64)
        positions = np.arange(start, start + count, dtype=np.int64)[None]
        logits = self._run(
            np.asarray([token_ids], np.int64), mask, positions, slice(row, row + 1)
        )  # [1, 1 or count, vocab]
        return logits[:, -1]

    def decode(self, seq_ids: list[int], tokens: list[int], positions: list[int]) -> Any:
        """One session run over the decoding sequences, gathered into rows ``0 .. n-1``; logits in their order."""
        count = len(tokens)
        order = self.rows.gather(seq_ids, max(positions) + 1)  # each sequence's row
        by_row = np.empty(count, np.int64)
        by_row[order] = np.arange(count)  # the batch index of the sequence in each row
        where = np.asarray(positions, np.int64)[by_row]
        for seq_id, position in zip(seq_ids, positions):
            self.rows.lengths[seq_id] = position + 1
        mask = (np.arange(int(where.max()) + 1)[None, :] <= where[:, None]).astype(np.int64)  # [rows, longest + 1]
        logits = self._run(
            np.asarray(tokens, np.int64)[by_row][:, None], mask, where[:, None], slice(0, count)
        )  # [rows, 1, vocab]
        return logits[:, -1][order]

    def _run(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, rows: slice) -> np.ndarray:
        d, ort = self.d, self.d.ort
        binding = d.session.io_binding()
        binding.bind_cpu_input(d.input_ids, ids)
        binding.bind_cpu_input(d.attention_mask, mask)
        if d.position_ids:
            binding.bind_cpu_input(d.position_ids, positions)
        binding.bind_output(d.logits)
        for (past_key, past_value), (present_key, present_value), keys, values in zip(
            d.past, d.present, self.rows.keys, self.rows.values
        ):
            key, value = ort.OrtValue.ortvalue_from_numpy(keys[rows]), ort.OrtValue.ortvalue_from_numpy(values[rows])
            binding.bind_ortvalue_input(past_key, key)
            binding.bind_ortvalue_input(past_value, value)
            binding.bind_ortvalue_output(present_key, key)  # the same buffer: written in place
            binding.bind_ortvalue_output(present_value, value)
        d.session.run_with_iobinding(binding)
        return binding.get_outputs()[0].numpy()

    # ------------------------------------------------------------------ sampling
    def generator(self, seed: int) -> Any:
        return numpy_generator(seed)

    def sample(self, logits: Any, rows: list[RowSampling]) -> list[TokenChoice]:
        return sample_numpy(logits, rows)
