"""The onnx flavor: LLMs exported to onnxruntime-genai's format, packaged as servelm model directories
(task ``llm/v1/chat``), generated with onnxruntime-genai's batching Engine on a deliberately chosen
execution provider."""

from .export import export
from .flavor import load_model, save_model

__all__ = ["export", "load_model", "save_model"]
