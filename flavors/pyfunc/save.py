"""``save_model`` for the python_function flavor: cloudpickled objects or models-from-code."""

from __future__ import annotations

import base64
import importlib.metadata as md
import json
import logging
import os
import platform
import shutil
import sys
import typing
from collections.abc import Callable
from typing import Any, Optional, Union

import cloudpickle

from servelm.agents import ChatAgent, ChatModel, FunctionPythonModel, PythonModel, PythonModelContext, ResponsesAgent
from servelm.agents.chat_agent_types import ChatAgentRequest, ChatAgentResponse
from servelm.agents.chat_types import CHAT_MODEL_INPUT_EXAMPLE, ChatCompletionRequest, ChatCompletionResponse
from servelm.agents.llm_client import declared_llm
from servelm.agents.python_model import overrides
from servelm.agents.responses_types import ResponsesAgentRequest, ResponsesAgentResponse

from ..directory import new_model_directory
from ..environment import (
    imported_modules,
    merge_requirements,
    modules_of_object,
    record_secret_env_reads,
    requirements_for_modules,
    write_environment,
)
from ..errors import ModelFormatError
from ..model import INPUT_EXAMPLE_FILE, SERVING_INPUT_FILE, Model
from ..signature import (
    AnyType,
    ColSpec,
    ModelSignature,
    Schema,
    params_schema_from_dict,
    schema_from_pydantic_fields,
    schema_from_type_hint,
)
from ..signature_inference import schema_of
from .code import load_code_model
from .mlflow_compat import as_servelm_model, unwrap
from .wrappers import task_of, wrap_python_model

log = logging.getLogger("servelm.pyfunc")

FLAVOR_NAME = "python_function"
LOADER_MODULE = "servelm.flavors.pyfunc.loader"
PICKLE_FILE = "python_model.pkl"
CODE_DIR = "code"
ARTIFACTS_DIR = "artifacts"

_AGENT_SCHEMAS: dict[str, tuple[Any, Any, dict[str, Any]]] = {
    "agent/v1/chat": (
        ChatCompletionRequest,
        ChatCompletionResponse,
        CHAT_MODEL_INPUT_EXAMPLE,
    ),
    "agent/v2/chat": (ChatAgentRequest, ChatAgentResponse, {"messages": [{"role": "user", "content": "Hello!"}]}),
    "agent/v1/responses": (
        ResponsesAgentRequest,
        ResponsesAgentResponse,
        {"input": [{"role": "user", "content": "Hello!"}]},
    ),
}


def save_model(
    path: str,
    python_model: Union[PythonModel, Callable[[Any], Any], str, os.PathLike, None] = None,
    artifacts: Optional[dict[str, str]] = None,
    code_paths: Optional[list[str]] = None,
    model_config: Union[dict[str, Any], str, os.PathLike, None] = None,
    signature: Optional[ModelSignature] = None,
    input_example: Any = None,
    pip_requirements: Union[list[str], str, os.PathLike, None] = None,
    extra_pip_requirements: Union[list[str], str, os.PathLike, None] = None,
    metadata: Optional[dict[str, Any]] = None,
    streamable: Optional[bool] = None,
    loader_module: Optional[str] = None,
    data_path: Optional[str] = None,
    conda_env: Union[dict[str, Any], str, os.PathLike, None] = None,
    mlflow_model: Any = None,
) -> Model:
    """Save a model directory at ``path`` (which must not exist yet) and return its ``Model``.

    ``python_model`` is a PythonModel / agent instance or a one-argument callable (both cloudpickled),
    or the path of a ``.py`` file that calls ``servelm.flavors.set_model(obj)`` (models from code:
    stored as text, run once now to validate). Alternatively ``loader_module`` (+ ``data_path``) names
    a module with ``_load_pyfunc(data_path, model_config=None)``. Agents get their task, signature and
    input example automatically. The directory is written completely or not at all.

    As in MLflow: ``model_config`` may be a YAML / JSON file path; ``pip_requirements`` and
    ``extra_pip_requirements`` may be a requirements file path (``-r`` entries read, ``-c`` constraints
    written to constraints.txt); ``conda_env`` (a dict or conda.yaml path) is written as conda.yaml and
    gives the requirements; an input example may be a DataFrame, numpy arrays or hold bytes.
    ``mlflow_model`` is accepted and ignored (MLflow's argument for log_model).
    """
    if os.path.exists(path) and os.listdir(path):
        raise ModelFormatError(f"{path} already exists and is not empty: choose a new directory")
    if (python_model is None) == (loader_module is None):
        raise ModelFormatError("pass exactly one of python_model or loader_module")
    given = [n for n, v in (("conda_env", conda_env), ("pip_requirements", pip_requirements),
                            ("extra_pip_requirements", extra_pip_requirements)) if v is not None]  # fmt: skip
    if len(given) > 1:
        # as MLflow: pip_requirements replaces the inferred list, extra_pip_requirements adds to it; both is ambiguous
        raise ModelFormatError(f"pass only one of conda_env, pip_requirements and extra_pip_requirements; got {given}")
    model_config = read_model_config(model_config)
    with new_model_directory(path) as tmp:
        return _write(
            tmp,
            python_model,
            artifacts,
            code_paths,
            model_config,
            signature,
            input_example,
            pip_requirements,
            extra_pip_requirements,
            metadata,
            streamable,
            loader_module,
            data_path,
            conda_env,
        )


def _write(
    tmp: str,
    python_model: Any,
    artifacts: Optional[dict[str, str]],
    code_paths: Optional[list[str]],
    model_config: Optional[dict[str, Any]],
    signature: Optional[ModelSignature],
    input_example: Any,
    pip_requirements: Union[list[str], str, os.PathLike, None],
    extra_pip_requirements: Union[list[str], str, os.PathLike, None],
    metadata: Optional[dict[str, Any]],
    streamable: Optional[bool],
    loader_module: Optional[str],
    data_path: Optional[str],
    conda_env: Any = None,
) -> Model:
    conf: dict[str, Any] = {"cloudpickle_version": cloudpickle.__version__, "code": None}
    modules: set[str] = set()
    if code_paths:
        os.makedirs(os.path.join(tmp, CODE_DIR))
        for src in code_paths:
            if not os.path.exists(src):
                raise ModelFormatError(f"code path {src} does not exist")
            dst = os.path.join(tmp, CODE_DIR, os.path.basename(os.path.normpath(src)))
            (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, dst)
            modules |= _modules_in_path(src)
        conf["code"] = CODE_DIR
    conf["env"] = {"conda": "conda.yaml", "virtualenv": "python_env.yaml"}
    saved_artifacts = _copy_artifacts(tmp, artifacts)
    if saved_artifacts:
        conf["artifacts"] = {name: {"path": rel} for name, rel in saved_artifacts.items()}
    context = PythonModelContext(
        {k: os.path.join(tmp, v) for k, v in saved_artifacts.items()}, dict(model_config or {})
    )

    secrets: set[str] = set()
    model_obj: Any = None
    if loader_module is not None:
        conf["loader_module"] = loader_module
        if data_path:
            dst = os.path.join(tmp, os.path.basename(os.path.normpath(data_path)))
            (shutil.copytree if os.path.isdir(data_path) else shutil.copy2)(data_path, dst)
            conf["data"] = os.path.basename(dst)
    elif isinstance(python_model, (str, os.PathLike)):
        code_file = os.fspath(python_model)
        if not code_file.endswith(".py") or not os.path.isfile(code_file):
            raise ModelFormatError(f"python_model={code_file!r}: a models-from-code path must be an existing .py file")
        with record_secret_env_reads() as secrets:
            model_obj = as_servelm_model(
                load_code_model(code_file, [os.path.join(tmp, CODE_DIR)] if code_paths else [], model_config)
            )
        shutil.copy2(code_file, os.path.join(tmp, os.path.basename(code_file)))
        with open(code_file) as f:
            modules |= imported_modules(f.read())
        conf["loader_module"] = LOADER_MODULE
        conf["model_code_path"] = os.path.basename(code_file)
    else:
        model_obj = as_servelm_model(python_model)
        if not hasattr(model_obj, "predict"):
            raise ModelFormatError(
                f"python_model must be a PythonModel, a callable or a .py path; got {type(python_model).__name__}"
            )
        _pickle_model(unwrap(model_obj), os.path.join(tmp, PICKLE_FILE))
        modules |= modules_of_object(python_model) | {"cloudpickle"}
        conf["loader_module"] = LOADER_MODULE
        conf["python_model"] = PICKLE_FILE
    if model_config:
        conf["config"] = dict(model_config)
    conf["python_version"] = platform.python_version()

    metadata = dict(metadata or {})
    type_hinted = False
    if model_obj is not None:
        if hasattr(model_obj, "load_context"):
            model_obj.load_context(context)
        task = task_of(model_obj)
        if task:
            metadata.setdefault("task", task)
            request_type, response_type, default_example = _AGENT_SCHEMAS[task]
            if signature is None:
                signature = ModelSignature(
                    schema_from_pydantic_fields(request_type, exclude=("model",)),
                    schema_from_pydantic_fields(response_type),
                )
            if input_example is None:
                input_example = default_example
        elif signature is None:
            signature, type_hinted = _signature_from_hints(model_obj)
        if streamable is None:
            streamable = _can_stream(model_obj)
    example, example_params = _split_example(input_example)
    inferred = signature is None and example is not None
    if inferred:
        try:
            signature = ModelSignature(
                schema_of(example), None, params_schema_from_dict(example_params) if example_params else None
            )
        except ValueError as exc:  # as MLflow: a model whose example implies no signature is saved without one
            log.warning("no signature can be inferred from the input example (%s): the model is saved without one", exc)
            inferred = False
    elif signature is not None and signature.params is None and example_params:
        signature.params = params_schema_from_dict(example_params)  # MLflow infers params from the example too
    calls_llm = declared_llm(context.model_config) is not None if model_obj is not None else False
    if calls_llm:
        # its LLM is reached only where servelm serves it beside the agent: the example is checked there
        log.info("the agent calls an LLM (model_config llm): its input example is not run at save")
    if model_obj is not None and input_example is not None and not calls_llm:
        with record_secret_env_reads() as seen:
            try:
                prediction = _predict_example(
                    model_obj, context, input_example, signature, metadata.get("task"), type_hinted
                )  # noqa: E501
            except ModelFormatError as exc:
                if metadata.get("task"):
                    raise  # an agent's example is its request type: failing it is a bug in the agent
                # MLflow saves a model whose example fails (it may need what only serving has) and says so
                log.warning("%s; the model is saved%s", exc, " without a signature" if inferred else "")
                signature = None if inferred else signature
            else:
                if inferred and signature is not None:
                    signature.outputs = _output_schema(prediction)
        secrets |= seen
    conf["streamable"] = bool(streamable)

    info = _write_input_example(tmp, example, example_params) if example is not None else None
    requirements = merge_requirements(requirements_for_modules(modules), pip_requirements, extra_pip_requirements)
    write_environment(tmp, requirements, secrets, conda_env)
    model = Model(
        signature=signature,
        saved_input_example_info=info,
        metadata=metadata or None,
        is_signature_from_type_hint=type_hinted,
    )
    model.add_flavor(FLAVOR_NAME, **dict(sorted(conf.items())))
    model.save(tmp)
    model.model_size_bytes = _dir_size(tmp)
    model.save(tmp)
    return model


def read_model_config(model_config: Any) -> Optional[dict[str, Any]]:
    """A model_config given as a dict, or as the path of a YAML / JSON file (MLflow accepts both)."""
    if model_config is None or isinstance(model_config, dict):
        return model_config
    import yaml

    file = os.fspath(model_config)
    if not os.path.isfile(file):
        raise ModelFormatError(f"model_config={file!r}: not a dict and not an existing YAML / JSON file")
    with open(file) as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ModelFormatError(f"model_config file {file} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelFormatError(f"model_config file {file} does not hold a mapping")
    return data


def _pickle_model(model_obj: Any, file: str) -> None:
    """Cloudpickle the model; classes from local modules (not installed packages) go by value, so the
    directory loads where that module is not importable (a test file, a notebook helper...)."""
    target = model_obj.func if isinstance(model_obj, FunctionPythonModel) else model_obj
    module = sys.modules.get(getattr(target, "__module__", None) or type(target).__module__)
    top = (module.__name__.split(".")[0]) if module else ""
    by_value = (
        module is not None
        and top not in md.packages_distributions()
        and top not in sys.stdlib_module_names
        and top not in ("__main__", "servelm")
    )
    if by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        with open(file, "wb") as f:
            cloudpickle.dump(model_obj, f)
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(module)


def _modules_in_path(src: str) -> set[str]:
    files = (
        [src]
        if src.endswith(".py")
        else [os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs if f.endswith(".py")]
    )
    local = {os.path.splitext(os.path.basename(src))[0]}
    out: set[str] = set()
    for file in files:
        with open(file) as f:
            try:
                out |= imported_modules(f.read())
            except SyntaxError:
                continue
    return out - local


def _copy_artifacts(tmp: str, artifacts: Optional[dict[str, str]]) -> dict[str, str]:
    saved: dict[str, str] = {}
    for name, src in (artifacts or {}).items():
        src = src[len("file://") :] if src.startswith("file://") else src
        if not os.path.exists(src):
            raise ModelFormatError(f"artifact {name!r}: {src} does not exist")
        rel = os.path.join(ARTIFACTS_DIR, os.path.basename(os.path.normpath(src)))
        os.makedirs(os.path.join(tmp, ARTIFACTS_DIR), exist_ok=True)
        (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, os.path.join(tmp, rel))
        saved[name] = rel
    return saved


def _signature_from_hints(model_obj: Any) -> tuple[Optional[ModelSignature], bool]:
    func = model_obj.func if isinstance(model_obj, FunctionPythonModel) else type(model_obj).predict
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        return None, False
    names = [
        n for n in func.__code__.co_varnames[: func.__code__.co_argcount] if n not in ("self", "context", "params")
    ]
    input_hint = hints.get(names[0]) if names else None
    inputs: Optional[Schema] = schema_from_type_hint(input_hint) if input_hint is not None else None
    outputs = schema_from_type_hint(hints["return"]) if "return" in hints else None
    if inputs is None:
        return None, False
    return ModelSignature(inputs, outputs), True


def _can_stream(model_obj: Any) -> bool:
    for base in (ChatAgent, ChatModel, ResponsesAgent, PythonModel):
        if isinstance(model_obj, base):
            return overrides(model_obj, base, "predict_stream") or overrides(model_obj, base, "apredict_stream")
    return False


def _split_example(example: Any) -> tuple[Any, Optional[dict[str, Any]]]:
    """MLflow allows ``(input, params)`` tuples as input examples."""
    if isinstance(example, tuple) and len(example) == 2 and isinstance(example[1], dict):
        return example[0], example[1]
    return example, None


def _output_schema(prediction: Any) -> Schema:
    """The output schema a prediction implies; ``any`` where it implies none (MLflow's fallback)."""
    try:
        schema = schema_of(prediction)
    except Exception as exc:  # a type the inference does not know: MLflow records "any" as well
        log.warning("the output schema cannot be inferred from the prediction (%s): it is recorded as any", exc)
        schema = None
    return schema if schema is not None else Schema((ColSpec(AnyType()),))


def _predict_example(
    model_obj: Any,
    context: PythonModelContext,
    example: Any,
    signature: Optional[ModelSignature],
    task: Optional[str],
    type_hinted: bool,
) -> Any:
    """The model's prediction on its input example, through the same conversions a loaded model applies."""
    from .pyfunc_model import PyFuncModel

    data, params = _split_example(example)
    meta = Model(
        signature=signature, metadata={"task": task} if task else None, is_signature_from_type_hint=type_hinted
    )
    try:
        return PyFuncModel(meta, wrap_python_model(model_obj, context), context.model_config, "", model_obj).predict(
            data, params
        )
    except Exception as exc:
        raise ModelFormatError(f"the model failed on its input example: {type(exc).__name__}: {exc}") from exc


def _write_input_example(tmp: str, example: Any, params: Optional[dict[str, Any]]) -> dict[str, Any]:
    """input_example.json and serving_input_example.json in MLflow's forms: a DataFrame as its split
    orient (``dataframe_split``), numpy arrays as TF-serving ``inputs``, bytes as base64."""
    info: dict[str, Any] = {
        "artifact_path": INPUT_EXAMPLE_FILE,
        "serving_input_path": SERVING_INPUT_FILE,
        "type": "json_object",
    }
    if type(example).__name__ == "DataFrame" and hasattr(example, "columns"):
        stored: Any = {"columns": [str(c) for c in example.columns], "data": example.to_numpy().tolist()}
        serving: dict[str, Any] = {"dataframe_split": stored}
        info.update(type="dataframe", pandas_orient="split")
    elif type(example).__name__ == "ndarray" or (
        isinstance(example, dict) and example and all(type(v).__name__ == "ndarray" for v in example.values())
    ):
        stored = {
            "inputs": example.tolist()
            if type(example).__name__ == "ndarray"
            else {k: v.tolist() for k, v in example.items()}
        }
        serving = dict(stored)
        info.update(type="ndarray", format="tf-serving")
    else:
        stored = example
        serving = dict(example) if isinstance(example, dict) else {"inputs": example}
    if params:
        stored = {"inputs": stored, "params": params} if info["type"] == "json_object" else {**stored, "params": params}
        serving["params"] = params
    with open(os.path.join(tmp, INPUT_EXAMPLE_FILE), "w") as f:
        json.dump(stored, f, default=_json_default)
    with open(os.path.join(tmp, SERVING_INPUT_FILE), "w") as f:
        json.dump(serving, f, indent=2, default=_json_default)
    return info


def _json_default(obj: Any) -> Any:
    """Example values JSON has no type for: bytes as base64, numpy values, datetimes as ISO text."""
    if isinstance(obj, (bytes, bytearray)):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} in the input example cannot be written as JSON")


def _dir_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
