"""The loader_module of onnx-flavor directories (MLflow's generic ``_load_pyfunc`` protocol)."""

from __future__ import annotations

import os
from typing import Any, Optional

from .flavor import load_onnx
from .pyfunc import OnnxPyfunc


def _load_pyfunc(data_path: str, model_config: Optional[dict[str, Any]] = None) -> OnnxPyfunc:
    """Load the model directory ``data_path`` as a chat (or text-generation) pyfunc model. ``model_config``
    may hold ``execution_provider``, ``threads`` and ``kv_cache_dtype`` (where and how the model runs)
    besides generation defaults."""
    config = dict(model_config or {})
    provider, threads = config.pop("execution_provider", None), config.pop("threads", None)
    model, meta = load_onnx(data_path, provider, threads=threads, kv_cache_dtype=config.pop("kv_cache_dtype", None))
    config = {**meta.pyfunc_config(), **config}
    return OnnxPyfunc(model, meta.task or "text-generation", os.path.basename(os.path.normpath(data_path)), config)
