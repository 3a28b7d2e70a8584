"""The model format: ``MLmodel`` files, signatures, environments and the flavors that write them."""

from servelm.agents import __version__

from .code_registry import ModelConfig, set_model
from .errors import ModelFormatError, SchemaEnforcementError
from .model import Model
from .signature import ColSpec, ModelSignature, ParamSchema, ParamSpec, Schema, TensorSpec
from .signature_inference import infer_signature

__all__ = [
    "ColSpec",
    "Model",
    "ModelConfig",
    "ModelFormatError",
    "infer_signature",
    "ModelSignature",
    "ParamSchema",
    "ParamSpec",
    "Schema",
    "SchemaEnforcementError",
    "TensorSpec",
    "__version__",
    "set_model",
]
