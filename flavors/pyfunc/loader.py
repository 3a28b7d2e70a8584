"""The loader module named in servelm's ``MLmodel`` files (MLflow's generic loader_module protocol).

``mlflow.pyfunc.load_model`` imports this module and calls ``_load_pyfunc(data_path, model_config)``;
so does servelm. It returns an object with ``predict(data, params=None)`` and ``predict_stream``.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Optional

import cloudpickle

from servelm.agents import PythonModelContext

from ..errors import ModelFormatError
from ..model import Model
from .code import load_code_model
from .mlflow_compat import MLFLOW_INSTALL_HINT, as_servelm_model
from .wrappers import wrap_python_model


def merged_config(saved: Optional[dict[str, Any]], override: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The saved model_config with load-time values on top; keys the saved config lacks are ignored
    with a warning (when a config was saved), so a typo cannot silently change behaviour."""
    config = dict(saved or {})
    for key, value in (override or {}).items():
        if saved and key not in saved:
            warnings.warn(f"model_config key {key!r} is not in the saved config {sorted(saved)}; ignored", stacklevel=3)
            continue
        config[key] = value
    return config


def _load_pyfunc(data_path: str, model_config: Optional[dict[str, Any]] = None) -> Any:
    """Load the python_function model in directory ``data_path``; returns its predict adapter."""
    return load_python_model(data_path, model_config)[1]


def load_python_model(path: str, model_config: Optional[dict[str, Any]] = None) -> tuple[Any, Any]:
    """Load (python_model object, predict adapter) from a servelm model directory."""
    model = Model.load(path)
    conf = model.flavor("python_function")
    code_dir = os.path.join(path, conf["code"]) if conf.get("code") else None
    added = [code_dir] if code_dir and code_dir not in sys.path else []
    sys.path[:0] = added
    try:
        artifacts = {}
        for name, spec in (conf.get("artifacts") or {}).items():
            artifact = os.path.join(path, spec["path"])
            if not os.path.exists(artifact):
                raise ModelFormatError(f"artifact {name!r} is missing: {artifact} not found")
            artifacts[name] = os.path.abspath(artifact)
        context = PythonModelContext(artifacts, merged_config(conf.get("config"), model_config))
        python_model = as_servelm_model(_load_object(path, conf, context.model_config))
        if hasattr(python_model, "load_context"):
            python_model.load_context(context)
    except BaseException:
        for entry in added:
            sys.path.remove(entry)
        raise
    return python_model, wrap_python_model(python_model, context)


def _load_object(path: str, conf: dict[str, Any], model_config: Optional[dict[str, Any]] = None) -> Any:
    if conf.get("model_code_path"):
        code_file = os.path.join(path, os.path.basename(conf["model_code_path"]))
        if not os.path.isfile(code_file):
            raise ModelFormatError(f"model code file {code_file} is missing")
        return load_code_model(code_file, [], model_config)
    if conf.get("python_model"):
        pickle_file = os.path.join(path, conf["python_model"])
        if not os.path.isfile(pickle_file):
            raise ModelFormatError(f"pickled model {pickle_file} is missing")
        try:
            with open(pickle_file, "rb") as f:
                return cloudpickle.load(f)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] == "mlflow":
                raise ModelFormatError(
                    f"{pickle_file} holds an object of MLflow's classes ({exc.name}): {MLFLOW_INSTALL_HINT}"
                ) from exc
            raise ModelFormatError(f"{pickle_file} cannot be unpickled: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            raise ModelFormatError(f"{pickle_file} cannot be unpickled: {type(exc).__name__}: {exc}") from exc
    raise ModelFormatError(
        f"{os.path.join(path, 'MLmodel')}: python_function flavor has neither model_code_path nor python_model"
    )


# MLflow's own pyfunc loaders, for directories MLflow saved: the same python_model / model_code_path
# conventions apply, so servelm loads them itself (the model code may still import mlflow).
LOADER_MODULES_OF_MLFLOW = (
    "mlflow.pyfunc.model",
    "mlflow.pyfunc.loaders.code_model",
    "mlflow.pyfunc.loaders.chat_model",
    "mlflow.pyfunc.loaders.chat_agent",
    "mlflow.pyfunc.loaders.responses_agent",
)
