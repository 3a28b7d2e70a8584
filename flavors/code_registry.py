"""``set_model``: how a models-from-code file hands its model object to the loader.

Each executing code file gets its own slot keyed by thread, so several threads can save or load
models-from-code at once without seeing each other's model (MLflow keeps one global).
"""

from __future__ import annotations

import threading
from typing import Any

_slots = threading.local()
_MISSING = object()


def set_model(model: Any) -> None:
    """Declare ``model`` as the model of the code file being executed (call it once, at module level)."""
    if model is None:
        raise ValueError("set_model(None): pass the model object (a PythonModel, agent or callable)")
    stack = getattr(_slots, "stack", None)
    if not stack:
        raise RuntimeError("set_model() was called outside of a servelm models-from-code load")
    stack[-1] = model


class capture_model:
    """Context manager that runs a code file and collects what it passed to ``set_model``."""

    def __enter__(self) -> "capture_model":
        if not hasattr(_slots, "stack"):
            _slots.stack = []
        _slots.stack.append(_MISSING)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.model = _slots.stack.pop()

    def result(self, code_path: str) -> Any:
        """The captured model; an error naming the file when it never called set_model."""
        from .errors import ModelFormatError

        if self.model is _MISSING:
            raise ModelFormatError(f"{code_path} did not call servelm.flavors.set_model(model) (or mlflow.models.set_model)")
        return self.model
