"""The loader_module of transformers-flavor directories (MLflow's generic ``_load_pyfunc`` protocol)."""

from __future__ import annotations

import os
from typing import Any, Optional

from .flavor import load_components, locate_checkpoint
from .pyfunc import TransformersPyfunc


def _load_pyfunc(data_path: str, model_config: Optional[dict[str, Any]] = None) -> TransformersPyfunc:
    """Load the model directory ``data_path`` as a chat (or text-generation) pyfunc model. ``model_config``
    may hold ``device``, ``threads``, ``dtype`` and ``quantization`` (where and how the model runs) besides
    generation defaults."""
    meta_config = {
        **locate_checkpoint(data_path).meta.pyfunc_config(),  # type: ignore[union-attr]
        **(model_config or {}),
    }
    model, tokenizer, meta = load_components(
        data_path, meta_config.get("device"), meta_config.get("threads"), meta_config.get("dtype")
    )
    config = {k: v for k, v in meta_config.items() if k not in ("device", "threads", "dtype", "quantization")}
    task = meta.task or "text-generation"
    name = os.path.basename(os.path.normpath(data_path))
    return TransformersPyfunc(model, tokenizer, task, name, config, quantization=meta_config.get("quantization"))
