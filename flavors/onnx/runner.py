"""The onnx engine's model runner on CPU: onnxruntime driven directly on the exported decoder (its
past key/value inputs), under the shared continuous-batching scheduler.

onnxruntime-genai's own Engine batches at most 4 requests at a time on CPU exports and holds the GIL
while it runs; here the scheduler batches every running sequence each step. The KV cache is numpy
buffers per layer, [rows, kv_heads, positions, head_dim], bound to the session as both past and present
(the exported GroupQueryAttention writes each new position in place, reading each row's own length
from its attention mask), so a step copies no cache.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from ..cache import default_cache_dir
from ..generation.choice import RowSampling, TokenChoice
from ..generation.numpy_sampling import numpy_generator, sample_numpy
from .last_token import last_token_decoder

_LENGTH_STEP = 256  # positions are allocated in multiples of this (attention cost grows with the buffer)
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class OrtDecoder:
    """An exported decoder opened for the runner: the session, its input and output names, cache shape
    (shared by every runner of the model; read-only)."""

    def __init__(self, genai_dir: str, config: dict[str, Any], threads: int, cache_dir: Optional[str] = None):
        import onnxruntime as ort

        self.ort = ort
        decoder = config["model"]["decoder"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        names = decoder["inputs"]
        outputs = decoder["outputs"]
        model_path = os.path.join(genai_dir, decoder["filename"])
        model_path = last_token_decoder(model_path, outputs["logits"], cache_dir or default_cache_dir()) or model_path
        self.session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
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
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.cache_dtype = _DTYPES.get(inputs[self.past[0][0]].type, np.float32)
        self.position_ids = names.get("position_ids") if names.get("position_ids") in inputs else None


class OrtRunner:
    """A ``ModelRunner`` over an ``OrtDecoder``: its own KV cache, grown as sequences need room."""

    def __init__(self, decoder: OrtDecoder, max_rows: int):
        self.d = decoder
        self.context_length = decoder.context_length
        self.vocab_size = decoder.vocab_size
        self.max_rows = max_rows
        self.keys: list[np.ndarray] = []
        self.values: list[np.ndarray] = []
        self.rows = 0
        self.length = 0

    # ------------------------------------------------------------------ the cache
    def ensure(self, rows: int, length: int) -> None:
        """Grow to at least ``rows`` rows (doubling, up to ``max_rows``) of ``length`` positions (in steps of 256)."""
        wanted = min(self.max_rows, rows)
        rows = min(self.max_rows, max(wanted, 2 * self.rows)) if wanted > self.rows else self.rows
        length = max(self.length, min(self.context_length, -(-length // _LENGTH_STEP) * _LENGTH_STEP))
        if rows == self.rows and length == self.length:
            return
        d = self.d
        shape = (rows, d.kv_heads, length, d.head_dim)
        keys = [np.zeros(shape, d.cache_dtype) for _ in range(d.layers)]
        values = [np.zeros(shape, d.cache_dtype) for _ in range(d.layers)]
        for old, new in zip(self.keys + self.values, keys + values):
            new[: self.rows, :, : self.length] = old
        self.keys, self.values, self.rows, self.length = keys, values, rows, length

    def release(self) -> None:
        self.keys, self.values, self.rows, self.length = [], [], 0, 0

    def move(self, src: int, dst: int, length: int) -> None:
        for cache in self.keys + self.values:
            cache[dst, :, :length] = cache[src, :, :length]

    def swap(self, a: int, b: int, length: int) -> None:
        for cache in self.keys + self.values:
            kept = cache[a, :, :length].copy()
            cache[a, :, :length] = cache[b, :, :length]
            cache[b, :, :length] = kept

    def save_block(self, row: int, start: int, size: int) -> tuple[Any, int]:
        block = np.stack(
            [c[row, :, start : start + size] for c in self.keys + self.values]
        )  # [2 * layers, kv_heads, size, head_dim]
        return block, block.nbytes

    def load_block(self, block: Any, row: int, start: int) -> None:
        size = block.shape[2]
        for cache, part in zip(self.keys + self.values, block):
            cache[row, :, start : start + size] = part

    # ------------------------------------------------------------------ forward passes
    def prefill(self, row: int, token_ids: list[int], start: int) -> Any:
        count = len(token_ids)
        mask = np.ones((1, start + count), np.int64)
        positions = np.arange(start, start + count, dtype=np.int64)[None]
        logits = self._run(
            np.asarray([token_ids], np.int64), mask, positions, slice(row, row + 1)
        )  # [1, 1 or count, vocab]
        return logits[:, -1]

    def decode(self, tokens: list[int], positions: list[int]) -> Any:
        count = len(tokens)
        where = np.asarray(positions, np.int64)
        mask = (np.arange(int(where.max()) + 1)[None, :] <= where[:, None]).astype(np.int64)  # [rows, longest + 1]
        logits = self._run(
            np.asarray(tokens, np.int64)[:, None], mask, where[:, None], slice(0, count)
        )  # [rows, 1, vocab]
        return logits[:, -1]

    def _run(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, rows: slice) -> np.ndarray:
        d, ort = self.d, self.d.ort
        binding = d.session.io_binding()
        binding.bind_cpu_input(d.input_ids, ids)
        binding.bind_cpu_input(d.attention_mask, mask)
        if d.position_ids:
            binding.bind_cpu_input(d.position_ids, positions)
        binding.bind_output(d.logits)
        for (past_key, past_value), (present_key, present_value), keys, values in zip(
            d.past, d.present, self.keys, self.values
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
