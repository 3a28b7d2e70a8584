"""``set_model``: how a models-from-code file hands its model object to the loader.

Each executing code file gets its own slot keyed by thread, so several threads can save or load
models-from-code at once without seeing each other's model (MLflow keeps one global). A file written for
MLflow calls ``mlflow.models.set_model``: while servelm runs a code file, that call lands in the same slot
(``install_mlflow_set_model``), and outside of servelm's loads it does what MLflow does.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

_slots = threading.local()
_MISSING = object()
_lock = threading.Lock()


def set_model(model: Any) -> None:
    """Declare ``model`` as the model of the code file being executed (call it once, at module level).

    ``model`` is a PythonModel or agent (servelm's or MLflow's), a callable taking the model input, or a
    LangChain runnable (served through its ``invoke`` / ``batch`` / ``stream``).
    """
    if model is None or isinstance(model, (str, bytes)):
        raise ValueError(
            f"set_model({model!r}): pass the model object (a PythonModel, agent, callable or LangChain runnable)"
        )
    if not (callable(model) or hasattr(model, "predict") or hasattr(model, "invoke")):
        raise TypeError(
            f"set_model: {type(model).__name__} is neither a PythonModel / agent, a callable, nor a LangChain runnable"
        )
    stack = getattr(_slots, "stack", None)
    if not stack:  # the file run as a script (python my_agent.py), as MLflow allows: nothing to register it with
        return
    stack[-1] = model


def capturing() -> bool:
    """True while this thread runs a code file under ``capture_model``."""
    return bool(getattr(_slots, "stack", None))


def install_mlflow_set_model() -> bool:
    """Route ``mlflow.models.set_model`` to servelm's slot while a servelm load runs (MLflow's own loads are
    unchanged). Imports mlflow; False when it is not installed."""
    try:
        import mlflow.models
        import mlflow.models.model as model_module
    except ImportError:
        return False
    with _lock:
        original = model_module.set_model
        if getattr(original, "_servelm_shim", False):
            return True

        def routed_set_model(model: Any) -> None:
            if capturing():
                set_model(model)
            else:
                original(model)

        routed_set_model._servelm_shim = True  # type: ignore[attr-defined]
        routed_set_model.__doc__ = original.__doc__
        model_module.set_model = routed_set_model
        mlflow.models.set_model = routed_set_model
    return True


def _mlflow_global_model() -> Any:
    """What a file gave MLflow's set_model behind servelm's back (taken, and MLflow's global cleared)."""
    module = sys.modules.get("mlflow.models.model")
    model = getattr(module, "__mlflow_model__", None) if module is not None else None
    if model is not None:
        module.__mlflow_model__ = None  # type: ignore[union-attr]
    return model


class capture_model:
    """Context manager that runs a code file and collects what it passed to ``set_model``."""

    def __enter__(self) -> capture_model:
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
            self.model = _mlflow_global_model()
        if self.model is None or self.model is _MISSING:
            raise ModelFormatError(
                f"{code_path} did not call servelm.flavors.set_model(model) (or mlflow.models.set_model)"
            )
        return self.model


def _current_config() -> Any:
    stack = getattr(_slots, "configs", None)
    return stack[-1] if stack else None


class ModelConfig:
    """The model_config of the code file being loaded (MLflow's ``mlflow.models.ModelConfig``).

    ``ModelConfig(development_config="config.yaml")`` reads the saved model_config while servelm loads or
    saves the model, and ``development_config`` (a dict or a YAML file path) otherwise.
    """

    def __init__(self, *, development_config: Any = None):
        config = _current_config()
        self.config = config if config is not None else development_config
        if self.config is None:
            raise FileNotFoundError("no model_config was given at save time and no development_config here")
        if not isinstance(self.config, dict):
            import os

            if not os.path.isfile(str(self.config)):
                raise FileNotFoundError(f"Config file '{self.config}' not found.")

    def to_dict(self) -> dict[str, Any]:
        """The whole configuration."""
        if isinstance(self.config, dict):
            return self.config
        import yaml

        with open(self.config) as f:
            return yaml.safe_load(f) or {}

    def get(self, key: str) -> Any:
        """One value; KeyError naming the keys when it is missing."""
        data = self.to_dict()
        if key not in data:
            raise KeyError(f"Key '{key}' not found in configuration: {data}.")
        return data[key]


class model_config_for_load:
    """While a code file runs: its model_config for ``ModelConfig`` (servelm's, and MLflow's when installed)."""

    def __init__(self, config: Any):
        self.config = config
        self._mlflow: Any = None  # mlflow.models.model_config, when MLflow is imported
        self._previous: Any = None

    def __enter__(self) -> model_config_for_load:
        if not hasattr(_slots, "configs"):
            _slots.configs = []
        _slots.configs.append(self.config)
        self._mlflow = sys.modules.get("mlflow.models.model_config")
        if self._mlflow is not None and self.config is not None:
            self._previous = self._mlflow.__mlflow_model_config__
            self._mlflow.__mlflow_model_config__ = self.config
        return self

    def __exit__(self, *exc: Any) -> None:
        _slots.configs.pop()
        if self._mlflow is not None and self.config is not None:
            self._mlflow.__mlflow_model_config__ = self._previous
