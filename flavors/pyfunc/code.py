"""Running a models-from-code file: execute it and collect what it passed to ``set_model``."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from typing import Any

from ..code_registry import capture_model, install_mlflow_set_model, model_config_for_load
from ..errors import ModelFormatError
from .mlflow_compat import MLFLOW_INSTALL_HINT


def load_code_model(code_file: str, extra_sys_path: list[str], model_config: Any = None) -> Any:
    """Execute ``code_file`` as a fresh module and return the object it gave ``set_model``.

    ``extra_sys_path`` entries are put on sys.path first (the model's code_paths); ``model_config`` is
    what ``ModelConfig()`` (servelm's or MLflow's) reads in the file; an exception in the file becomes a
    ModelFormatError naming it.
    """
    for entry in reversed(extra_sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    name = f"servelm_model_code_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, code_file)
    if spec is None or spec.loader is None:
        raise ModelFormatError(f"{code_file} cannot be loaded as Python code")
    module = importlib.util.module_from_spec(spec)
    with open(code_file, encoding="utf-8", errors="replace") as f:
        if "mlflow" in f.read():
            install_mlflow_set_model()  # mlflow.models.set_model(...) lands in servelm's slot
    sys.modules[name] = module  # so cloudpickle and dataclasses can find classes defined there
    with capture_model() as captured, model_config_for_load(model_config):
        try:
            spec.loader.exec_module(module)
        except ModuleNotFoundError as exc:
            sys.modules.pop(name, None)
            if exc.name and exc.name.split(".")[0] == "mlflow":
                raise ModelFormatError(
                    f"{code_file} was written for MLflow and imports {exc.name}: {MLFLOW_INSTALL_HINT}"
                ) from exc
            raise ModelFormatError(f"{code_file} failed while loading: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            sys.modules.pop(name, None)
            raise ModelFormatError(f"{code_file} failed while loading: {type(exc).__name__}: {exc}") from exc
    return captured.result(code_file)
