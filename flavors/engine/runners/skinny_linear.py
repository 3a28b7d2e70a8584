"""fp32 linear layers of steps of a few tokens on an x86 CPU: one numba kernel that reads each weight row once
for all of the step's tokens, and does the layer's steps around the product in the same call.

Why not torch's: a decode step of a few rows multiplies [rows, in] by a weight [out, in], and its time is the time
to read the weight. torch's fp32 product (MKL's sgemm; oneDNN's and MKL's packed kernels alike) reads it at memory
speed for one row, but for 2 to about 16 rows takes up to 2.3x as long, as if it read the weight several times
(``benchmarks/skinny_linear.py``: on SmolLM2's layers at 8 rows, 35 ms a step against 24 ms here, both on AVX2).
That is the transformers engine's path on CPUs without native bf16 (AVX2-only servers), where it runs in fp32.
Here each thread takes a share of the weight's rows, four at a time, and multiplies those four against the step's
tokens two at a time (one token alone: four dot products at once) while they are in the L1 cache; the dot products
accumulate in fp32 lanes the compiler vectorises. While it multiplies four rows it asks for the next four: past one
token the products take longer than the reads, and the hardware prefetchers, which follow the reads, would leave
the memory idle meanwhile (at 8 tokens a step took 29 ms without it).

The steps around a product (RMS norm or silu(gate) * up before it, bias and skip connection after) run in the same
call because a decode step's other cost is the number of operations: each torch op costs microseconds of dispatch,
and after the weights have streamed through the caches far more than in a warm loop, so a layer of a dozen small
ops cost an fp32 decode step of SmolLM2 about 5 ms of its 25.

Past a few dozen tokens a step is compute-bound and torch's blocked GEMM is faster (past about a dozen where MKL
runs AVX-512, whose products of 1 to 3 rows also keep up); the runner asks ``skinny_linear`` only within the window
``skinny_window`` gives for this CPU.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable
from functools import cache
from typing import Any, Optional

import numpy as np

log = logging.getLogger("servelm.engine")

#: the steps (fewest and most tokens) that take the kernel, by the vector width MKL runs at
#: (``benchmarks/skinny_linear.py``, ``results/skinny_linear*.json``): on AVX2 it is as fast at 1 token (0.99x, the
#: steps around the product saved) and faster from 2 to 32 (1.1-1.8x); where MKL runs AVX-512 its products of 1 to 3
#: rows and of 16 or more keep up
SKINNY_WINDOWS = {"avx2": (1, 32), "avx512": (4, 12)}

#: (x [tokens, in or 2 * in], weight [out, in], out [tokens, out], bias [out or 0], norm [in or 0], eps, gated,
#: residual [tokens, out] or [0, 0]), all fp32 -> None; see ``skinny_linear`` for what each does
SkinnyKernel = Callable[..., None]

_NONE = np.zeros(0, np.float32)  # an absent bias or norm weight
_NO_RESIDUAL = np.zeros((0, 0), np.float32)


def skinny_kernel() -> Optional[SkinnyKernel]:
    """The compiled kernel (once per process, cached on disk by numba), or None where it does not apply: not an x86
    CPU (the only ones it is measured on), numba not installed or unable to compile it."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    return _compiled()


def skinny_window() -> tuple[int, int]:
    """The step sizes (fewest and most tokens) the kernel takes on this CPU."""
    from ..cpu_features import cpu_has

    return SKINNY_WINDOWS["avx512" if cpu_has("avx512f") else "avx2"]


def skinny_linear(
    kernel: SkinnyKernel,
    x: Any,
    weight: Any,
    bias: Any = None,
    norm: Any = None,
    eps: float = 0.0,
    gated: bool = False,
    residual: Any = None,
) -> Any:
    """``x`` [tokens, in] times ``weight`` [out, in] (plus ``bias`` [out]) as a new fp32 tensor [tokens, out], by
    ``kernel`` on the calling thread's numba threads. The layer's steps around a product run in the same call, as
    the model's own modules compute them: ``norm`` [in]: ``x`` RMS-normalised (``eps``) and scaled by it first;
    ``gated``: ``x`` is [tokens, 2 * in], gate and up halves, and the product takes ``silu(gate) * up``;
    ``residual`` [tokens, out]: added to the product (a layer's skip connection). ``weight``, ``bias`` and ``norm``
    may be given as the numpy views of their tensors, made once (a view costs a microsecond a call)."""
    import torch

    out = np.empty((x.shape[0], weight.shape[0]), np.float32)  # [tokens, out]
    kernel(
        x.contiguous().numpy(),
        _host(weight),
        out,
        _NONE if bias is None else _host(bias),
        _NONE if norm is None else _host(norm),
        eps,
        gated,
        _NO_RESIDUAL if residual is None else residual.contiguous().numpy(),
    )
    return torch.from_numpy(out)


def _host(array: Any) -> np.ndarray:
    """A host tensor's numpy view (a numpy array as it is)."""
    return array if isinstance(array, np.ndarray) else array.numpy()


_prefetch: Any = None  # ``attention/bf16_intrinsics.prefetch``, loaded with the kernel (numba is optional)

#: values (fp32) of one prefetch call: 16 cache lines
PREFETCH_RUN = 256


def _load_prefetch() -> None:
    global _prefetch
    from ..attention.bf16_intrinsics import prefetch

    _prefetch = prefetch


@cache
def _compiled() -> Optional[SkinnyKernel]:
    try:
        import numba  # noqa: F401
    except ImportError:
        log.info("numba is not installed: fp32 linear layers run in torch (pip install numba)")
        return None
    try:
        return _compile()
    except Exception as exc:  # a numba without a usable threading layer, a compiler error: torch's product
        log.warning("the skinny linear kernel is unavailable (%s): fp32 linear layers run in torch", exc)
        return None


def _compile() -> SkinnyKernel:
    import numba
    from numba import prange

    from ..numba_cache import compiled_from_cache

    if numba.config.THREADING_LAYER == "default":  # type: ignore[attr-defined]
        # tbb or OpenMP, never the workqueue layer: engine threads of one process may run the kernel at once
        numba.config.THREADING_LAYER = "threadsafe"  # type: ignore[attr-defined]
    _load_prefetch()

    def kernel(x, weight, out, bias, norm, eps, gated, residual):
        tokens = x.shape[0]
        outputs, width = weight.shape
        if gated or norm.shape[0]:  # the rows the product reads: silu(gate) * up, or x RMS-normalised
            rows = np.empty((tokens, width), np.float32)
            for m in range(tokens):
                if gated:
                    for j in range(width):
                        gate = x[m, j]
                        rows[m, j] = gate / (np.float32(1.0) + np.exp(-gate)) * x[m, width + j]
                else:
                    squares = np.float32(0.0)
                    for j in range(width):
                        squares += x[m, j] * x[m, j]
                    scale = np.float32(1.0) / np.sqrt(squares / np.float32(width) + np.float32(eps))
                    for j in range(width):
                        rows[m, j] = norm[j] * (x[m, j] * scale)
        else:
            rows = x
        quads = outputs // 4
        flat = weight.ravel()  # [out * in], the same memory
        for task in prange(quads + outputs % 4):  # four weight rows a task, then the rows left over one a task
            n = task * 4 if task < quads else quads * 4 + task - quads
            if task + 1 < quads:  # the next four rows, while these are multiplied (``_prefetch``)
                ahead = (n + 4) * width
                for at in range(ahead, ahead + 4 * width, PREFETCH_RUN):
                    _prefetch(flat, at, PREFETCH_RUN)
            if task < quads and tokens == 1:  # one token: four dot products at once, nothing computed twice
                a0 = np.float32(0.0)
                a1 = np.float32(0.0)
                a2 = np.float32(0.0)
                a3 = np.float32(0.0)
                for j in range(width):
                    u = rows[0, j]
                    a0 += u * weight[n, j]
                    a1 += u * weight[n + 1, j]
                    a2 += u * weight[n + 2, j]
                    a3 += u * weight[n + 3, j]
                out[0, n], out[0, n + 1], out[0, n + 2], out[0, n + 3] = a0, a1, a2, a3
            elif task < quads:
                m = 0
                while m < tokens:  # two tokens at a time against the four rows (the last alone if odd)
                    pair = m + 1 < tokens
                    second = m + 1 if pair else m
                    a0 = np.float32(0.0)
                    a1 = np.float32(0.0)
                    a2 = np.float32(0.0)
                    a3 = np.float32(0.0)
                    b0 = np.float32(0.0)
                    b1 = np.float32(0.0)
                    b2 = np.float32(0.0)
                    b3 = np.float32(0.0)
                    for j in range(width):
                        u, v = rows[m, j], rows[second, j]
                        w0, w1, w2, w3 = weight[n, j], weight[n + 1, j], weight[n + 2, j], weight[n + 3, j]
                        a0 += u * w0
                        a1 += u * w1
                        a2 += u * w2
                        a3 += u * w3
                        b0 += v * w0
                        b1 += v * w1
                        b2 += v * w2
                        b3 += v * w3
                    out[m, n], out[m, n + 1], out[m, n + 2], out[m, n + 3] = a0, a1, a2, a3
                    if pair:
                        out[second, n], out[second, n + 1], out[second, n + 2], out[second, n + 3] = b0, b1, b2, b3
                    m += 2
            else:
                for m in range(tokens):
                    total = np.float32(0.0)
                    for j in range(width):
                        total += rows[m, j] * weight[n, j]
                    out[m, n] = total
            last = min(n + 4, outputs) if task < quads else n + 1
            for m in range(tokens):  # bias and skip connection on the outputs this task wrote
                for k in range(n, last):
                    if bias.shape[0]:
                        out[m, k] += bias[k]
                    if residual.shape[0]:
                        out[m, k] += residual[m, k]

    warm_up = (
        np.zeros((1, 8), np.float32),
        np.zeros((5, 8), np.float32),
        np.zeros((1, 5), np.float32),
        _NONE,
        _NONE,
        1e-5,
        False,
        _NO_RESIDUAL,
    )
    options = {"nogil": True, "fastmath": True, "parallel": True, "boundscheck": False}
    return compiled_from_cache(kernel, warm_up, (__name__, "_compile", []), **options)
