"""The transformers flavor: package a Hugging Face causal LM as a model directory (MLflow's layout for
``mlflow.transformers``: ``model/`` weights, ``components/tokenizer/``), and load it back."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from typing import Any, Optional

from ..directory import new_model_directory
from ..errors import ModelFormatError
from ..llm_directory import CHAT_EXAMPLE, check_task, write_llm_metadata
from ..model import Model
from ..signature import ModelSignature
from .chat import require_chat_template
from .gguf import gguf_checkpoint, gguf_file, is_gguf

log = logging.getLogger("servelm.transformers")
FLAVOR_NAME = "transformers"
LOADER_MODULE = "servelm.flavors.transformers.loader"
MODEL_DIR = "model"
TOKENIZER_DIR = os.path.join("components", "tokenizer")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
)
__all__ = [
    "CHAT_EXAMPLE",
    "Checkpoint",
    "context_length",
    "load_checkpoint",
    "load_components",
    "load_model",
    "load_tokenizer",
    "locate_checkpoint",
    "save_model",
]


def _components(transformers_model: Any) -> tuple[Any, Any, Optional[str]]:
    """(model or None, tokenizer, local source dir or None) from a pipeline, a dict, or a checkpoint path."""
    if isinstance(transformers_model, (str, os.PathLike)):
        source = os.fspath(transformers_model)
        if is_gguf(source):
            source = gguf_checkpoint(source)
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
    raise ModelFormatError(
        "transformers_model must be a text-generation pipeline, a {'model', 'tokenizer'} dict or a checkpoint path; "
        f"got {type(transformers_model).__name__}"
    )


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
    """Save a causal LM (pipeline, ``{"model", "tokenizer"}`` dict, local checkpoint path, or a GGUF file
    or a directory with one) at ``path``. A GGUF file is kept as it is (``model/NAME.gguf``, recorded as the
    flavor's ``gguf_file``): the llamacpp engine serves it quantized, and the transformers engine and pyfunc
    load a dequantized copy converted once into servelm's cache.

    ``task="llm/v1/chat"`` serves OpenAI chat and needs a chat template (checked now);
    ``"text-generation"`` keeps prompt -> text. ``save_pretrained=False`` stores only the source name
    and revision (loaded from there at serve time) instead of the weights.
    """
    import transformers

    check_task(task)
    gguf = (
        gguf_file(os.fspath(transformers_model))
        if isinstance(transformers_model, (str, os.PathLike)) and is_gguf(os.fspath(transformers_model))
        else None
    )
    model, tokenizer, source = _components(transformers_model)
    if task == "llm/v1/chat":
        require_chat_template(tokenizer, "save_model")
    name = source_model_name or source or getattr(getattr(model, "config", None), "_name_or_path", None) or "model"
    config_dict = _config_of(model, source)
    with new_model_directory(path) as tmp:
        flavor: dict[str, Any] = {
            "code": None,
            "components": ["tokenizer"],
            "framework": "pt",
            "instance_type": "TextGenerationPipeline",
            "pipeline_model_type": (
                config_dict.get("architectures")
                or [type(model).__name__ if model is not None else "AutoModelForCausalLM"]
            )[0],
            "source_model_name": name,
            "task": "text-generation",
            "tokenizer_type": type(tokenizer).__name__,
            "torch_dtype": torch_dtype
            or str(config_dict.get("torch_dtype") or config_dict.get("dtype") or "float32").replace("torch.", ""),
            "transformers_version": transformers.__version__,
        }
        if save_pretrained and gguf is not None:
            os.makedirs(os.path.join(tmp, MODEL_DIR))
            shutil.copy2(gguf, os.path.join(tmp, MODEL_DIR, os.path.basename(gguf)))
            flavor["model_binary"] = MODEL_DIR
            flavor["gguf_file"] = f"{MODEL_DIR}/{os.path.basename(gguf)}"
        elif save_pretrained:
            _save_weights(model, source, os.path.join(tmp, MODEL_DIR))
            flavor["model_binary"] = MODEL_DIR
        else:
            flavor["source_model_revision"] = source_model_revision
        tokenizer.save_pretrained(os.path.join(tmp, TOKENIZER_DIR))
        return write_llm_metadata(
            tmp,
            task,
            FLAVOR_NAME,
            flavor,
            LOADER_MODULE,
            ["torch", "transformers", "tokenizers", "safetensors"],
            model_config,
            signature,
            input_example,
            pip_requirements,
            extra_pip_requirements,
            metadata,
        )


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


@dataclass
class Checkpoint:
    """Where a servable causal LM's parts are: weights (a local dir or a hub id), tokenizer dir, metadata."""

    weights: str
    revision: Optional[str]
    tokenizer_dir: str
    torch_dtype: Optional[str]
    meta: Optional[Model]  # None for a bare Hugging Face checkpoint directory


def locate_checkpoint(path: str) -> Checkpoint:
    """The parts of a transformers-flavor directory, or of a bare local Hugging Face checkpoint."""
    if not os.path.isfile(os.path.join(path, "MLmodel")):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ModelFormatError(
                f"{path} is neither a transformers-flavor directory nor a Hugging Face checkpoint "
                "(no MLmodel, no config.json)"
            )
        return Checkpoint(path, None, path, None, None)
    meta = Model.load(path)
    flavor = meta.flavor(FLAVOR_NAME)
    tokenizer_dir = os.path.join(path, TOKENIZER_DIR)
    if not os.path.isdir(tokenizer_dir):
        raise ModelFormatError(f"{tokenizer_dir} is missing: the tokenizer component was not saved")
    if flavor.get("gguf_file"):  # kept quantized; the transformers engine runs a dequantized copy (cached)
        file = os.path.join(path, flavor["gguf_file"])
        if not os.path.isfile(file):
            raise ModelFormatError(f"{file} is missing: the GGUF file was not saved")
        return Checkpoint(gguf_checkpoint(file), None, tokenizer_dir, flavor.get("torch_dtype"), meta)
    if flavor.get("model_binary"):
        weights = os.path.join(path, flavor["model_binary"])
        if not os.path.isdir(weights):
            raise ModelFormatError(f"{weights} is missing: the model weights were not saved")
        return Checkpoint(weights, None, tokenizer_dir, flavor.get("torch_dtype"), meta)
    return Checkpoint(
        flavor["source_model_name"], flavor.get("source_model_revision"), tokenizer_dir, flavor.get("torch_dtype"), meta
    )


def load_tokenizer(checkpoint: Checkpoint) -> Any:
    """The checkpoint's tokenizer (no weights loaded)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoint.tokenizer_dir)


def context_length(checkpoint: Checkpoint) -> int:
    """Tokens the model can attend to (its config's max_position_embeddings; 2048 when it has none)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(checkpoint.weights, revision=checkpoint.revision)
    return int(getattr(config, "max_position_embeddings", 0) or 2048)


def load_checkpoint(
    checkpoint: Checkpoint, device: Optional[str] = None, threads: Optional[int] = None, dtype: Optional[str] = None
) -> tuple[Any, Any]:
    """(model on its device in eval mode, tokenizer), in ``dtype`` (default "auto": see ``device.py``). On
    CPU without ``threads``, large models compute on every core (``engine/threads.py``)."""
    import torch
    from transformers import AutoModelForCausalLM

    from ..engine.threads import default_threads
    from .device import choose_device
    from .progress import show_progress_bars

    show_progress_bars()
    tokenizer = load_tokenizer(checkpoint)
    torch_device, torch_dtype = choose_device(dtype, device, threads, checkpoint.torch_dtype)
    model = (
        AutoModelForCausalLM.from_pretrained(checkpoint.weights, revision=checkpoint.revision, dtype=torch_dtype)
        .to(torch_device)
        .eval()
    )
    if torch_device.type == "cpu" and threads is None:
        torch.set_num_threads(default_threads(sum(p.numel() * p.element_size() for p in model.parameters())))
        log.info("computing with %d torch threads", torch.get_num_threads())
    return model, tokenizer


def load_components(
    path: str, device: Optional[str] = None, threads: Optional[int] = None, dtype: Optional[str] = None
) -> tuple[Any, Any, Model]:
    """(model on its device in eval mode, tokenizer, Model metadata) of a transformers-flavor directory."""
    checkpoint = locate_checkpoint(path)
    if checkpoint.meta is None:
        raise ModelFormatError(f"{path} has no MLmodel file: not a transformers-flavor directory")
    model, tokenizer = load_checkpoint(checkpoint, device, threads, dtype)
    return model, tokenizer, checkpoint.meta


def load_model(
    path: str, return_type: str = "pipeline", device: Optional[str] = None, dtype: Optional[str] = None
) -> Any:
    """The native objects: a text-generation pipeline, or ``{"model", "tokenizer"}`` with return_type="components"."""
    model, tokenizer, _ = load_components(path, device, dtype=dtype)
    if return_type == "components":
        return {"model": model, "tokenizer": tokenizer}
    if return_type != "pipeline":
        raise ValueError("return_type must be 'pipeline' or 'components'")
    from transformers import pipeline

    return pipeline("text-generation", model=model, tokenizer=tokenizer)
