"""Where and in what precision a model runs: CUDA when available, else CPU (with the threads asked for;
the loader picks a count from the model's size otherwise, ``engine/threads.py``).

``dtype="auto"`` (the default) follows vLLM: on a GPU the checkpoint's bf16 / fp16, and bf16 for fp32
checkpoints (fp16 where bf16 is not supported); on a CPU bf16 when it computes bf16 natively
(AVX512-BF16 or AMX), else fp32. Any other value is used as given.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from ..engine.cpu_features import cpu_has, describe

log = logging.getLogger("servelm.device")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16, AMX or Arm's bf16, and oneDNN agrees)."""
    import torch

    if not any(cpu_has(feature) for feature in ("avx512_bf16", "amx_bf16", "bf16")):
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_has_vnni() -> bool:
    """Whether this CPU has int8 dot-product instructions (AVX512-VNNI or AVX-VNNI)."""
    return cpu_has("avx512_vnni") or cpu_has("avx_vnni")


def choose_device(
    dtype: Optional[str] = None,
    device: Optional[str] = None,
    threads: Optional[int] = None,
    checkpoint_dtype: Optional[str] = None,
) -> tuple[Any, Any]:
    """(torch device, torch dtype) to run a model with; logs the choice."""
    import torch

    if dtype not in (None, *DTYPES):
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    name = device or ("cuda" if torch.cuda.is_available() else "cpu")
    requested = getattr(torch, dtype) if dtype and dtype != "auto" else None
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0) if name.partition(":")[2].isdigit() or name == "cuda" else -1
        if not 0 <= index < count:
            raise ValueError(
                f"device {name!r}: this machine has {count} CUDA device(s) visible to torch {torch.__version__}"
                + ("" if count else " (a CPU build, or no GPU): leave device unset or use cpu")
            )
        if requested is None:
            saved = checkpoint_dtype if checkpoint_dtype in ("bfloat16", "float16") else "bfloat16"
            requested = getattr(torch, saved) if saved == "float16" or torch.cuda.is_bf16_supported() else torch.float16
        log.info("running on %s (%s), dtype %s", name, torch.cuda.get_device_name(torch.device(name)), requested)
        return torch.device(name), requested
    if requested is None:
        requested = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if threads:
        torch.set_num_threads(threads)
    log.info("running on cpu, dtype %s (%s)", requested, describe())
    return torch.device(name), requested
