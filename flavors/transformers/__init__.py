"""The transformers flavor: Hugging Face causal LMs as servelm model directories (task ``llm/v1/chat``)."""

from .flavor import load_model, save_model
from .smollm import smollm2
from .tiny import build_tiny_model, smollm2_shaped, tiny_model

__all__ = ["build_tiny_model", "load_model", "save_model", "smollm2", "smollm2_shaped", "tiny_model"]
