"""``load_model`` for the python_function flavor and the ``PyFuncModel`` it returns."""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Optional

from ..environment import warn_environment_mismatches
from ..errors import ModelFormatError
from ..model import Model
from ..signature import enforce_params, enforce_schema
from .input_conversion import input_converter
from .loader import LOADER_MODULES_OF_MLFLOW, load_python_model
from .mlflow_compat import MLFLOW_INSTALL_HINT, unwrap
from .tensor_input import enforce_tensor_input

FLAVOR_NAME = "python_function"
_AGENT_TASKS = ("agent/v1/chat", "agent/v2/chat", "agent/v1/responses")


class PyFuncModel:
    """A loaded model: ``predict`` / ``predict_stream`` with the signature enforced, plus its metadata."""

    def __init__(
        self,
        metadata: Model,
        impl: Any,
        model_config: dict[str, Any],
        path: str,
        python_model: Any = None,
        convert_inputs: bool = True,
    ):
        self.metadata = metadata
        self._impl = impl
        self.model_config = model_config
        self.path = path
        self._python_model = python_model
        sig = metadata.signature
        # Agent requests are validated by their pydantic types; a second generic check would only cost time.
        agent = metadata.task in _AGENT_TASKS or _is_agent(python_model)
        self._input_schema = sig.inputs if sig is not None and not agent else None
        self._params_schema = sig.params if sig is not None else None
        # What the model's input becomes before it sees it (MLflow's conversions; input_conversion.py):
        # decided once here, so models that need none pay nothing per call.
        self._convert = (
            None
            if agent or not convert_inputs
            else input_converter(self._input_schema, python_model, metadata.is_signature_from_type_hint)
        )
        if self._convert is not None:
            self._input_schema = None  # the conversion checks the input itself (columns, or the type hint)
        # A plain pyfunc model (not an agent, not one of servelm's LLM flavors) takes its input as MLflow's pyfunc
        # hands it over: numpy arrays for JSON tensors at /invocations, tensors checked strictly, and params only
        # where its signature declares them.
        self.mlflow_input = not agent and convert_inputs
        self._enforce: Optional[Callable[[Any, Any], Any]] = (
            None
            if self._input_schema is None
            else enforce_tensor_input
            if self.mlflow_input and self._input_schema.is_tensor()
            else enforce_schema
        )
        self._check_params = self._params_schema is not None or self.mlflow_input
        self.predict_fn = impl.predict

    def _prepare(self, data: Any) -> Any:
        if self._enforce is not None:
            data = self._enforce(data, self._input_schema)
        if self._convert is not None:
            data = self._convert(data)
        return data

    def predict(self, data: Any, params: Optional[dict[str, Any]] = None) -> Any:
        """Run the model on ``data`` after checking it against the signature (MLflow's conversions only)."""
        if self._enforce is not None:
            data = self._enforce(data, self._input_schema)
        if self._convert is not None:
            data = self._convert(data)
        if self._check_params:
            params = enforce_params(params, self._params_schema)
        return self._impl.predict(data, params)

    def predict_stream(self, data: Any, params: Optional[dict[str, Any]] = None) -> Iterator[Any]:
        """Yield the model's output in pieces; an error if the model cannot stream."""
        if not hasattr(self._impl, "predict_stream"):
            raise ModelFormatError("this model does not support predict_stream")
        if self._enforce is not None or self._convert is not None:
            data = self._prepare(data)
        if self._check_params:
            params = enforce_params(params, self._params_schema)
        return self._impl.predict_stream(data, params)

    @property
    def input_example(self) -> Any:
        """The saved input example, or None."""
        return self.metadata.load_input_example(self.path)

    def unwrap_python_model(self) -> Any:
        """The user's model object (PythonModel, agent, MLflow's classes, callable, runnable...) behind this wrapper."""
        if self._python_model is None:
            raise ModelFormatError("this model was loaded by a custom loader_module and has no python_model to unwrap")
        return unwrap(self._python_model)

    def served_model(self) -> Any:
        """The servelm model object the server calls: the user's, or servelm's adapter around an MLflow
        agent, a callable or a LangChain runnable."""
        if self._python_model is None:
            raise ModelFormatError("this model was loaded by a custom loader_module and has no python_model to unwrap")
        return self._python_model

    def get_raw_model(self) -> Any:
        """The underlying model object (MLflow's ``PyFuncModel.get_raw_model``)."""
        if self._python_model is not None:
            return unwrap(self._python_model)
        raw = getattr(self._impl, "get_raw_model", None)
        return raw() if callable(raw) else self._impl

    @property
    def loader_module(self) -> Optional[str]:
        """The loader_module named in the python_function flavor (MLflow's attribute)."""
        return self.metadata.flavors.get(FLAVOR_NAME, {}).get("loader_module")

    @property
    def model_impl(self) -> Any:
        """The object whose predict this model calls (MLflow's attribute)."""
        return self._impl


def _is_agent(python_model: Any) -> bool:
    from servelm.agents import ChatAgent, ChatModel, ResponsesAgent

    return isinstance(python_model, (ChatAgent, ChatModel, ResponsesAgent))


def load_model(
    model_uri: str, suppress_warnings: bool = False, dst_path: Optional[str] = None, model_config: Any = None
) -> PyFuncModel:
    """Load a model directory as a PyFuncModel (``mlflow.pyfunc.load_model``'s parameters).

    ``model_uri`` is a directory or any model URI (``runs:/``, ``models:/``, ``s3://``... through MLflow, downloaded
    to ``dst_path`` when given; see flavors/uri.py). ``model_config`` (a dict or a YAML file path) overrides the
    saved config (unknown keys warned and ignored). ``suppress_warnings`` silences the warnings loading gives. Any
    loader_module with ``_load_pyfunc(data_path, model_config=None)`` is honoured; code_paths go on sys.path first.
    """
    if suppress_warnings:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _load_model(model_uri, dst_path, model_config, warn=False)
    return _load_model(model_uri, dst_path, model_config, warn=True)


def _load_model(model_uri: str, dst_path: Optional[str], model_config: Any, warn: bool) -> PyFuncModel:
    if model_config is not None and not isinstance(model_config, dict):
        from .save import read_model_config

        model_config = read_model_config(model_config)  # a YAML / JSON file path, as MLflow accepts
    from ..uri import resolve_model_uri

    path = os.path.abspath(resolve_model_uri(model_uri, dst_path))
    if not os.path.isdir(path):
        raise ModelFormatError(f"{path} is not a directory")
    metadata = Model.load(path)
    conf = metadata.flavor(FLAVOR_NAME)
    if warn:
        warn_environment_mismatches(path, conf.get("python_version"))
    loader = conf.get("loader_module")
    if not loader:
        raise ModelFormatError(f"{os.path.join(path, 'MLmodel')}: python_function flavor has no loader_module")
    if loader == "mlflow.transformers" and "transformers" in metadata.flavors:
        loader = "servelm.flavors.transformers.loader"  # MLflow's transformers layout is servelm's: no mlflow needed
    if loader in LOADER_MODULES_OF_MLFLOW or loader == "servelm.flavors.pyfunc.loader":
        python_model, impl = load_python_model(path, model_config)
        config = getattr(impl, "context", None)
        return PyFuncModel(metadata, impl, config.model_config if config else {}, path, python_model)
    # servelm's own loaders (the LLM flavors) take JSON input as it is; other loaders get MLflow's conversions
    return PyFuncModel(
        metadata,
        _custom_loader(path, conf, loader, model_config),
        dict(model_config or {}),
        path,
        convert_inputs=not loader.startswith("servelm."),
    )


def _custom_loader(path: str, conf: dict[str, Any], loader: str, model_config: Optional[dict[str, Any]]) -> Any:
    code_dir = os.path.join(path, conf["code"]) if conf.get("code") else None
    added = [code_dir] if code_dir and code_dir not in sys.path else []
    sys.path[:0] = added
    try:
        try:
            module = importlib.import_module(loader)
        except ImportError as exc:
            hint = f" ({MLFLOW_INSTALL_HINT})" if loader.split(".")[0] == "mlflow" else ""
            raise ModelFormatError(
                f"{os.path.join(path, 'MLmodel')}: loader_module {loader!r} cannot be imported: {exc}{hint}"
            ) from exc
        if not hasattr(module, "_load_pyfunc"):
            raise ModelFormatError(f"loader_module {loader!r} has no _load_pyfunc(data_path, model_config=None)")
        data_path = os.path.join(path, conf["data"]) if conf.get("data") else path
        try:
            return (
                module._load_pyfunc(data_path, model_config)
                if model_config is not None
                else module._load_pyfunc(data_path)
            )
        except ModelFormatError:
            raise
        except Exception as exc:
            raise ModelFormatError(
                f"loader_module {loader!r} failed on {data_path}: {type(exc).__name__}: {exc}"
            ) from exc
    except BaseException:
        for entry in added:
            sys.path.remove(entry)
        raise


def get_model_dependencies(model_uri: str, format: str = "pip") -> str:
    """The path of the model's requirements.txt (``format="pip"``) or conda.yaml (``"conda"``), as MLflow's
    ``get_model_dependencies``; ``model_uri`` is a directory or any URI ``resolve_model_uri`` takes."""
    from ..uri import resolve_model_uri

    path = resolve_model_uri(model_uri)
    name = {"pip": "requirements.txt", "conda": "conda.yaml"}.get(format)
    if name is None:
        raise ValueError(f"format must be 'pip' or 'conda'; got {format!r}")
    file = os.path.join(path, name)
    if not os.path.isfile(file):
        raise ModelFormatError(f"{file} not found: the model directory has no {name}")
    return file
