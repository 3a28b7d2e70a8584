"""Where a model runs: CUDA when available (dtype from the config, else bf16), else CPU with a deliberate
thread count (on 2 busy cores, torch's default threads ran 5-10x slower than one thread)."""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

log = logging.getLogger("servelm.device")


def cpu_threads() -> int:
    """Torch threads for CPU inference: half the cores (1 on a 2-core machine), at least 1."""
    return max(1, (os.cpu_count() or 2) // 2)


def choose_device(torch_dtype: Optional[str] = None, device: Optional[str] = None, threads: Optional[int] = None) -> tuple[Any, Any]:
    """(torch device, torch dtype) to load a model with; logs the choice."""
    import torch

    name = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        dtype = getattr(torch, torch_dtype) if torch_dtype and torch_dtype != "auto" else torch.bfloat16
        log.info("running on %s (%s), dtype %s", name, torch.cuda.get_device_name(torch.device(name)), dtype)
    else:
        dtype = getattr(torch, torch_dtype) if torch_dtype and torch_dtype not in ("auto", "float16", "bfloat16") else torch.float32
        torch.set_num_threads(threads or cpu_threads())
        log.info("running on cpu with %d torch threads, dtype %s", torch.get_num_threads(), dtype)
    return torch.device(name), dtype
