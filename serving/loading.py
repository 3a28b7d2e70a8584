"""Pick and build the ModelService for whatever ``servelm serve -m`` was pointed at."""

from __future__ import annotations

import os
from typing import Any, Optional

from servelm.agents import PythonModel, PythonModelContext
from servelm.flavors import Model, ModelFormatError
from servelm.flavors.pyfunc import PyFuncModel, load_model
from servelm.flavors.pyfunc.wrappers import task_of, wrap_python_model

from .service import ModelService
from .settings import ServerSettings

ENGINES = ("pyfunc", "transformers", "onnx", "vllm")


def default_model_name(model_or_path: Any) -> str:
    """The name /v1/models shows when none is given: the directory's name, or the class name."""
    if isinstance(model_or_path, (str, os.PathLike)):
        return os.path.basename(os.path.normpath(os.fspath(model_or_path))) or "model"
    if isinstance(model_or_path, PyFuncModel):
        return os.path.basename(model_or_path.path) or "model"
    return type(model_or_path).__name__


def choose_engine(path: str, forced: Optional[str]) -> str:
    """The engine for a directory: ``forced`` if given, else by its flavors (a bare HF checkpoint:
    transformers)."""
    if forced:
        if forced not in ENGINES:
            raise ModelFormatError(f"unknown engine {forced!r}; choose one of {', '.join(ENGINES)}")
        return forced
    if not os.path.isdir(path):
        raise ModelFormatError(f"{path} is not a directory")
    if os.path.isfile(os.path.join(path, "MLmodel")):
        flavors = Model.load(path).flavors
        if "transformers" in flavors:
            return "transformers"
        if "onnx" in flavors:
            return "onnx"
        if "python_function" in flavors:
            return "pyfunc"
        raise ModelFormatError(f"{os.path.join(path, 'MLmodel')}: no servable flavor (found {', '.join(flavors) or 'none'})")
    if os.path.isfile(os.path.join(path, "config.json")):
        return "transformers"
    raise ModelFormatError(f"{path} has no MLmodel file and is not a Hugging Face checkpoint (no config.json)")


def in_memory_pyfunc(python_model: PythonModel) -> PyFuncModel:
    """A PyFuncModel around an agent object that was never saved (for embedding and tests)."""
    context = PythonModelContext()
    python_model.load_context(context)
    task = task_of(python_model)
    metadata = Model(flavors={"python_function": {"streamable": True}}, metadata={"task": task} if task else None)
    return PyFuncModel(metadata, wrap_python_model(python_model, context), {}, "", python_model)


def build_service(model_or_path: Any, settings: ServerSettings) -> ModelService:
    """Load the model and wrap it in the service of its engine (this may take a while for LLMs)."""
    from .agent_service import AgentService

    if isinstance(model_or_path, ModelService):
        return model_or_path
    if isinstance(model_or_path, PyFuncModel):
        return AgentService(model_or_path, settings.max_threads)
    if isinstance(model_or_path, PythonModel):
        return AgentService(in_memory_pyfunc(model_or_path), settings.max_threads)
    path = os.path.abspath(os.fspath(model_or_path))
    engine = choose_engine(path, settings.engine)
    if engine == "pyfunc":
        return AgentService(load_model(path), settings.max_threads)
    raise ModelFormatError(f"the {engine} engine is not available in this build of servelm yet")
