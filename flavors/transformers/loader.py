"""The loader_module of transformers-flavor directories (MLflow's generic ``_load_pyfunc`` protocol)."""

from __future__ import annotations

import os
from typing import Any, Optional

from .flavor import load_components
from .pyfunc import TransformersPyfunc


def _load_pyfunc(data_path: str, model_config: Optional[dict[str, Any]] = None) -> TransformersPyfunc:
    """Load the model directory ``data_path`` as a chat (or text-generation) pyfunc model."""
    model, tokenizer, meta = load_components(data_path)
    config = {**meta.pyfunc_config(), **(model_config or {})}
    task = meta.task or "text-generation"
    return TransformersPyfunc(model, tokenizer, task, os.path.basename(os.path.normpath(data_path)), config)
