"""The onnx engine's forward pass on an export cut at its attention nodes (``cut_graph.py``): each piece an
onnxruntime session, and between two pieces servelm's kernels over a bf16 KV cache the runner owns: the
rotary embedding and cache writes (``cache_writes.py``), then attention (``attention/cpu_kernel.py``).

Why: onnxruntime's GroupQueryAttention on CPU works in fp32 one query head of one sequence at a time, and
one call of the whole graph takes one prompt length. Here a step's tokens (decode rows and prompt chunks
together) go through each piece as one sequence, so a step reads the weights once whatever its mix; the
attention reads a bf16 cache (half the bytes of fp32) on the CPU's bf16 dot-product instructions, each kv
head's keys and values once for its group of queries, each row over its own length.

The pieces run on onnxruntime's threads, the kernels on numba's; each pool stops spinning when its work is
done (``session.force_spinning_stop``; OpenMP's wait policy passive), or the two pools' spinning threads
take the cores from each other.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ...onnx.cut_graph import CutDecoder, cut_decoder

# (token, kv head) pairs from which the attention kernel runs on more than one thread (below, waking the other
# threads costs more than they save)
PARALLEL_TASKS = 32


class LayeredUnavailable(Exception):
    """Why an export cannot run cut at its attention nodes here (the runner then runs the whole graph)."""


class LayeredDecoder:
    """The pieces of a cut decoder opened as sessions, with the kernels between them (read-only, shared by
    every runner of the model)."""

    def __init__(self, cut: CutDecoder, sessions: list[Any], threads: int, head_dim: int):
        from ..attention.cache_writes import cache_writer

        self.cut, self.sessions, self.threads, self.head_dim = cut, sessions, threads, head_dim
        self.group = cut.heads // cut.kv_heads
        self.scale = cut.scale or head_dim**-0.5
        self.write = cache_writer(head_dim, cut.heads, cut.kv_heads, 2 * cut.cos.shape[1], True)
        self.attend: Any = None  # the attention kernel, compiled for the pools' block size (``attention_for``)

    def attention_for(self, block_size: int) -> None:
        """Compile (or load) the attention kernel for pools of ``block_size`` positions per block."""
        from ..attention.cpu_kernel import decode_kernel

        attend = decode_kernel(self.head_dim, self.group, "bfloat16", "cpu", block_size)
        if attend is None:
            raise LayeredUnavailable("the attention kernel does not compile here")
        self.attend = attend

    @classmethod
    def open(cls, model_path: str, logits: str, cache_dir: str, head_dim: int, threads: int) -> LayeredDecoder:
        """The cut decoder with its sessions and kernels; raises ``LayeredUnavailable`` where the graph cannot
        be cut or the kernels cannot run on the CPU's bf16 instructions."""
        import onnxruntime as ort

        try:
            import numba  # noqa: F401
        except ImportError:
            raise LayeredUnavailable("numba is not installed (pip install 'servelm[onnx]')") from None
        from ..attention.bf16_intrinsics import PAIRS, has_bf16_dot
        from ..cpu_features import why_not

        if not has_bf16_dot():
            raise LayeredUnavailable(why_not("avx512_bf16"))
        if head_dim % PAIRS:
            raise LayeredUnavailable(f"the head size {head_dim} is not a multiple of {PAIRS}")
        cut = cut_decoder(model_path, logits, cache_dir)
        if isinstance(cut, str):
            raise LayeredUnavailable(cut)
        # numba's OpenMP threads sleep between kernels instead of spinning through the next piece (read once,
        # when numba first starts its threads)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.force_spinning_stop", "1")
        sessions = [ort.InferenceSession(p.path, options, providers=["CPUExecutionProvider"]) for p in cut.pieces]
        return cls(cut, sessions, threads, head_dim)

    def forward(
        self,
        ids: np.ndarray,
        seqs: np.ndarray,
        tables: np.ndarray,
        positions: np.ndarray,
        last: list[int],
        keys: list[np.ndarray],
        values: list[np.ndarray],
    ) -> np.ndarray:
        """Logits [len(last), vocab] of the tokens at ``last`` among ``ids`` [tokens], each token's key and value
        written at its position of its sequence (``seqs`` [tokens] int64: a row of ``tables`` [sequences, blocks]
        int64, the block tables; ``positions`` [tokens] int64), each attending over its sequence up to its own
        position. ``keys``/``values`` per layer [pool blocks, kv_heads, block_size, head_dim] uint16 (bf16 bits)."""
        from ..attention.cpu_kernel import set_kernel_threads

        cut = self.cut
        tokens = len(ids)
        known: dict[str, np.ndarray] = {"input_ids": ids[None, :]}  # [1, tokens]: the pieces see one sequence
        queries = np.empty((tokens, cut.heads, self.head_dim), np.uint16)  # rotated, bf16 bits
        attended = np.empty((tokens, cut.heads, self.head_dim), np.float32)
        lengths = positions + 1  # [tokens]: the positions each token attends over
        size = keys[0].shape[2]
        blocks = tables[seqs, positions // size]  # [tokens]: the block each token's key and value go to
        offsets = positions % size
        set_kernel_threads(self.threads if tokens * cut.kv_heads >= PARALLEL_TASKS else 1)
        layer = 0
        for index, (piece, session) in enumerate(zip(cut.pieces, self.sessions)):
            if index == len(cut.pieces) - 1:  # the vocabulary projection: only the tokens that need logits
                known[cut.hidden] = np.ascontiguousarray(known[cut.hidden][:, last])
            results = session.run(list(piece.outputs), {name: known[name] for name in piece.inputs})
            known.update(zip(piece.outputs, results))
            if piece.qkv is not None and piece.attended is not None:
                qkv = known[piece.qkv].reshape(tokens, -1)  # [tokens, (heads + 2 * kv_heads) * head_dim] fp32
                self.write(qkv, blocks, offsets, positions, cut.cos, cut.sin, keys[layer], values[layer], queries)
                self.attend(
                    queries.reshape(tokens, cut.kv_heads, self.group, self.head_dim),
                    seqs,
                    tables,
                    keys[layer],
                    values[layer],
                    lengths,
                    self.scale,
                    attended,
                )  # attended [tokens, heads, head_dim]
                known[piece.attended] = attended.reshape(1, tokens, -1)  # [1, tokens, heads * head_dim]
                layer += 1
        return known[cut.pieces[-1].outputs[0]].reshape(len(last), -1)  # [last, vocab]
