"""The transformers flavor: package a Hugging Face causal LM as a model directory (MLflow's layout for
``mlflow.transformers``: ``model/`` weights, ``components/tokenizer/``), and load it back."""

from __future__ import annotations

import json
import os
import platform
import shutil
from typing import Any, Optional

from servelm.agents.chat_types import ChatCompletionRequest, ChatCompletionResponse

from ..environment import merge_requirements, requirements_for_modules, write_environment
from ..errors import ModelFormatError
from ..model import INPUT_EXAMPLE_FILE, SERVING_INPUT_FILE, Model
from ..signature import ColSpec, ModelSignature, Scalar, Schema, schema_from_pydantic_fields
from .chat import require_chat_template

FLAVOR_NAME = "transformers"
LOADER_MODULE = "servelm.flavors.transformers.loader"
MODEL_DIR = "model"
TOKENIZER_DIR = os.path.join("components", "tokenizer")
TASKS = ("llm/v1/chat", "text-generation")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json")
CHAT_EXAMPLE = {"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16, "temperature": 0.0}


def _components(transformers_model: Any) -> tuple[Any, Any, Optional[str]]:
    """(model or None, tokenizer, local source dir or None) from a pipeline, a dict, or a checkpoint path."""
    if isinstance(transformers_model, (str, os.PathLike)):
        source = os.fspath(transformers_model)
        if not os.path.isfile(os.path.join(source, "config.json")):
            raise ModelFormatError(f"{source} is not a Hugging Face checkpoint directory (no config.json)")
        from transformers import AutoTokenizer

        return None, AutoTokenizer.from_pretrained(source), source
    if isinstance(transformers_model, dict):
        if "model" not in transformers_model or "tokenizer" not in transformers_model:
            raise ModelFormatError("a dict transformers_model needs 'model' and 'tokenizer'")
        return transformers_model["model"], transformers_model["tokenizer"], None
    if hasattr(transformers_model, "model") and hasattr(transformers_model, "tokenizer"):
        return transformers_model.model, transformers_model.tokenizer, None
    raise ModelFormatError(f"transformers_model must be a text-generation pipeline, a {{'model', 'tokenizer'}} dict or a checkpoint path; got {type(transformers_model).__name__}")


def save_model(
    transformers_model: Any,
    path: str,
    task: str = "llm/v1/chat",
    model_config: Optional[dict[str, Any]] = None,
    signature: Optional[ModelSignature] = None,
    input_example: Any = None,
    torch_dtype: Optional[str] = None,
    save_pretrained: bool = True,
    pip_requirements: Optional[list[str]] = None,
    extra_pip_requirements: Optional[list[str]] = None,
    metadata: Optional[dict[str, Any]] = None,
    source_model_name: Optional[str] = None,
    source_model_revision: Optional[str] = None,
) -> Model:
    """Save a causal LM (pipeline, ``{"model", "tokenizer"}`` dict, or local checkpoint path) at ``path``.

    ``task="llm/v1/chat"`` serves OpenAI chat and needs a chat template (checked now);
    ``"text-generation"`` keeps prompt -> text. ``save_pretrained=False`` stores only the source name
    and revision (loaded from there at serve time) instead of the weights.
    """
    import transformers

    if task not in TASKS:
        raise ModelFormatError(f"task {task!r} is not supported; use one of {', '.join(TASKS)}")
    if os.path.exists(path) and os.listdir(path):
        raise ModelFormatError(f"{path} already exists and is not empty: choose a new directory")
    model, tokenizer, source = _components(transformers_model)
    if task == "llm/v1/chat":
        require_chat_template(tokenizer, "save_model")
    name = source_model_name or source or getattr(getattr(model, "config", None), "_name_or_path", None) or "model"
    config_dict = _config_of(model, source)
    tmp = f"{path}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        flavor: dict[str, Any] = {
            "code": None, "components": ["tokenizer"], "framework": "pt", "instance_type": "TextGenerationPipeline",
            "pipeline_model_type": (config_dict.get("architectures") or [type(model).__name__ if model is not None else "AutoModelForCausalLM"])[0],
            "source_model_name": name, "task": "text-generation", "tokenizer_type": type(tokenizer).__name__,
            "torch_dtype": torch_dtype or str(config_dict.get("torch_dtype") or config_dict.get("dtype") or "float32").replace("torch.", ""),
            "transformers_version": transformers.__version__,
        }
        if save_pretrained:
            _save_weights(model, source, os.path.join(tmp, MODEL_DIR))
            flavor["model_binary"] = MODEL_DIR
        else:
            flavor["source_model_revision"] = source_model_revision
        tokenizer.save_pretrained(os.path.join(tmp, TOKENIZER_DIR))
        pyfunc = {"env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"}, "loader_module": LOADER_MODULE,
                  "python_version": platform.python_version(), "streamable": task == "llm/v1/chat"}
        if model_config:
            pyfunc["config"] = dict(model_config)
        meta = dict(metadata or {})
        if task == "llm/v1/chat":
            meta.setdefault("task", task)
            signature = signature or ModelSignature(schema_from_pydantic_fields(ChatCompletionRequest, exclude=("model",)), schema_from_pydantic_fields(ChatCompletionResponse))
            example = CHAT_EXAMPLE if input_example is None else input_example
        else:
            signature = signature or ModelSignature(Schema((ColSpec(Scalar("string")),)), Schema((ColSpec(Scalar("string")),)))
            example = input_example
        info = _write_example(tmp, example) if example is not None else None
        model_meta = Model(signature=signature, saved_input_example_info=info, metadata=meta or None)
        model_meta.add_flavor("python_function", **pyfunc)
        model_meta.add_flavor(FLAVOR_NAME, **flavor)
        requirements = merge_requirements(requirements_for_modules(["torch", "transformers", "tokenizers", "safetensors"]), pip_requirements, extra_pip_requirements)
        write_environment(tmp, requirements)
        model_meta.save(tmp)
        model_meta.model_size_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp) for f in fs)
        model_meta.save(tmp)
        os.replace(tmp, path) if not os.path.exists(path) else (os.rmdir(path), os.replace(tmp, path))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return model_meta


def _config_of(model: Any, source: Optional[str]) -> dict[str, Any]:
    if model is not None:
        return model.config.to_dict()
    with open(os.path.join(source or "", "config.json")) as f:
        return json.load(f)


def _save_weights(model: Any, source: Optional[str], target: str) -> None:
    """Model weights and config into ``target``: copied from a checkpoint dir, else save_pretrained."""
    if model is not None:
        model.save_pretrained(target)
        return
    assert source is not None
    os.makedirs(target)
    for entry in os.listdir(source):
        src = os.path.join(source, entry)
        if os.path.isfile(src) and entry not in _TOKENIZER_FILES and not entry.startswith("servelm-"):
            shutil.copy2(src, os.path.join(target, entry))


def _write_example(tmp: str, example: Any) -> dict[str, Any]:
    with open(os.path.join(tmp, INPUT_EXAMPLE_FILE), "w") as f:
        json.dump(example, f)
    with open(os.path.join(tmp, SERVING_INPUT_FILE), "w") as f:
        json.dump(example if isinstance(example, dict) else {"inputs": example}, f, indent=2)
    return {"artifact_path": INPUT_EXAMPLE_FILE, "serving_input_path": SERVING_INPUT_FILE, "type": "json_object"}


def load_components(path: str, device: Optional[str] = None, threads: Optional[int] = None) -> tuple[Any, Any, Model]:
    """(model on its device in eval mode, tokenizer, Model metadata) of a transformers-flavor directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .device import choose_device

    hf_logging.disable_progress_bar()  # progress bars are noise in server logs
    meta = Model.load(path)
    flavor = meta.flavor(FLAVOR_NAME)
    tokenizer_dir = os.path.join(path, TOKENIZER_DIR)
    if not os.path.isdir(tokenizer_dir):
        raise ModelFormatError(f"{tokenizer_dir} is missing: the tokenizer component was not saved")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if flavor.get("model_binary"):
        weights = os.path.join(path, flavor["model_binary"])
        if not os.path.isdir(weights):
            raise ModelFormatError(f"{weights} is missing: the model weights were not saved")
        revision = None
    else:
        weights, revision = flavor["source_model_name"], flavor.get("source_model_revision")
    torch_device, dtype = choose_device(flavor.get("torch_dtype"), device, threads)
    model = AutoModelForCausalLM.from_pretrained(weights, revision=revision, dtype=dtype).to(torch_device).eval()
    return model, tokenizer, meta


def load_model(path: str, return_type: str = "pipeline", device: Optional[str] = None) -> Any:
    """The native objects: a text-generation pipeline, or ``{"model", "tokenizer"}`` with return_type="components"."""
    model, tokenizer, _ = load_components(path, device)
    if return_type == "components":
        return {"model": model, "tokenizer": tokenizer}
    if return_type != "pipeline":
        raise ValueError("return_type must be 'pipeline' or 'components'")
    from transformers import pipeline

    return pipeline("text-generation", model=model, tokenizer=tokenizer)
