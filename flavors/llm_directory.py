"""What both LLM flavors write besides their weights: the python_function block, the chat (or text)
signature and input example, the environment files and the MLmodel."""

from __future__ import annotations

import json
import os
import platform
from typing import Any, Optional

from servelm.agents.chat_types import ChatCompletionRequest, ChatCompletionResponse

from .environment import merge_requirements, requirements_for_modules, write_environment
from .errors import ModelFormatError
from .model import INPUT_EXAMPLE_FILE, SERVING_INPUT_FILE, Model
from .signature import ColSpec, ModelSignature, Scalar, Schema, schema_from_pydantic_fields

TASK_CHAT = "llm/v1/chat"
TASKS = (TASK_CHAT, "text-generation")
CHAT_EXAMPLE = {"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16, "temperature": 0.0}


def check_task(task: str) -> None:
    """A clear error for a task the LLM flavors do not save (called before any file is written)."""
    if task not in TASKS:
        raise ModelFormatError(f"task {task!r} is not supported; use one of {', '.join(TASKS)}")


def write_llm_metadata(
    directory: str,
    task: str,
    flavor_name: str,
    flavor: dict[str, Any],
    loader_module: str,
    modules: list[str],
    model_config: Optional[dict[str, Any]] = None,
    signature: Optional[ModelSignature] = None,
    input_example: Any = None,
    pip_requirements: Optional[list[str]] = None,
    extra_pip_requirements: Optional[list[str]] = None,
    metadata: Optional[dict[str, Any]] = None,
) -> Model:
    """Write the MLmodel (the flavor's block and a python_function block), signature, input example and
    environment of an LLM directory; ``modules`` are what its requirements pin. ``task`` is one of TASKS
    (see ``check_task``)."""
    pyfunc: dict[str, Any] = {
        "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
        "loader_module": loader_module,
        "python_version": platform.python_version(),
        "streamable": task == TASK_CHAT,
    }
    if model_config:
        pyfunc["config"] = dict(model_config)
    meta = dict(metadata or {})
    if task == TASK_CHAT:
        meta.setdefault("task", task)
        signature = signature or ModelSignature(
            schema_from_pydantic_fields(ChatCompletionRequest, exclude=("model",)),
            schema_from_pydantic_fields(ChatCompletionResponse),
        )
        example = CHAT_EXAMPLE if input_example is None else input_example
    else:
        signature = signature or ModelSignature(
            Schema((ColSpec(Scalar("string")),)), Schema((ColSpec(Scalar("string")),))
        )
        example = input_example
    info = _write_example(directory, example) if example is not None else None
    model = Model(signature=signature, saved_input_example_info=info, metadata=meta or None)
    model.add_flavor("python_function", **pyfunc)
    model.add_flavor(flavor_name, **flavor)
    write_environment(
        directory, merge_requirements(requirements_for_modules(modules), pip_requirements, extra_pip_requirements)
    )
    model.model_size_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(directory) for f in fs)
    model.save(directory)
    return model


def _write_example(directory: str, example: Any) -> dict[str, Any]:
    with open(os.path.join(directory, INPUT_EXAMPLE_FILE), "w") as f:
        json.dump(example, f)
    with open(os.path.join(directory, SERVING_INPUT_FILE), "w") as f:
        json.dump(example if isinstance(example, dict) else {"inputs": example}, f, indent=2)
    return {"artifact_path": INPUT_EXAMPLE_FILE, "serving_input_path": SERVING_INPUT_FILE, "type": "json_object"}
