"""The python_function flavor: save any Python model or agent, load it back as a ``PyFuncModel``."""

from .load import PyFuncModel, load_model
from .save import save_model

__all__ = ["PyFuncModel", "load_model", "save_model"]
