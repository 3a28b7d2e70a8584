"""The onnx flavor: an onnxruntime-genai folder packaged as a model directory (``model/`` holds the
genai folder), with an MLmodel ``onnx`` block and a ``python_function`` chat block; and loading it back."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Optional

from ..directory import new_model_directory
from ..errors import ModelFormatError
from ..llm_directory import check_task, write_llm_metadata
from ..model import Model
from ..signature import ModelSignature
from .export import EXPORT_INFO
from .model import OnnxModel, chosen_provider
from .runtime import GENAI_CONFIG, GenaiModel, import_genai, open_genai, saved_provider

FLAVOR_NAME = "onnx"
LOADER_MODULE = "servelm.flavors.onnx.loader"
MODEL_DIR = "model"


def has_chat_template(genai_dir: str) -> bool:
    """Whether the folder carries a chat template (chat_template.jinja or tokenizer_config.json's)."""
    if os.path.isfile(os.path.join(genai_dir, "chat_template.jinja")):
        return True
    config = os.path.join(genai_dir, "tokenizer_config.json")
    if os.path.isfile(config):
        with open(config) as f:
            return bool(json.load(f).get("chat_template"))
    return False


def save_model(
    onnx_model_dir: str,
    path: str,
    task: str = "llm/v1/chat",
    search_options: Optional[dict[str, Any]] = None,
    execution_provider: Optional[str] = None,
    model_config: Optional[dict[str, Any]] = None,
    signature: Optional[ModelSignature] = None,
    input_example: Any = None,
    pip_requirements: Optional[list[str]] = None,
    extra_pip_requirements: Optional[list[str]] = None,
    metadata: Optional[dict[str, Any]] = None,
) -> Model:
    """Package the onnxruntime-genai folder ``onnx_model_dir`` (see ``export``) as a model directory at ``path``.

    ``search_options`` become the folder's default search settings (genai_config.json ``search``);
    ``execution_provider`` the provider it runs on by default (else the one it was exported for).
    ``task="llm/v1/chat"`` needs a chat template in the folder (checked now).
    """
    og = import_genai()
    check_task(task)
    if not os.path.isfile(os.path.join(onnx_model_dir, GENAI_CONFIG)):
        raise ModelFormatError(
            f"{onnx_model_dir} is not an onnxruntime-genai folder (no {GENAI_CONFIG}); "
            "create one with servelm.flavors.onnx.export"
        )
    if task == "llm/v1/chat" and not has_chat_template(onnx_model_dir):
        raise ModelFormatError(
            f"{onnx_model_dir} has no chat template (chat_template.jinja or tokenizer_config.json 'chat_template'); "
            "add one or save with task='text-generation'"
        )
    with new_model_directory(path) as tmp:
        target = os.path.join(tmp, MODEL_DIR)
        shutil.copytree(onnx_model_dir, target)
        if search_options:
            _update_search(os.path.join(target, GENAI_CONFIG), search_options)
        info = _export_info(target)
        provider = (execution_provider or info.get("execution_provider") or saved_provider(target)).lower()
        flavor = {
            "onnxruntime_genai_version": og.__version__,
            "providers": [provider],
            "precision": info.get("precision", "unknown"),
            "genai_config": f"{MODEL_DIR}/{GENAI_CONFIG}",
            "data": MODEL_DIR,
            "code": None,
        }
        return write_llm_metadata(
            tmp,
            task,
            FLAVOR_NAME,
            flavor,
            LOADER_MODULE,
            ["onnxruntime_genai", "numpy", "tokenizers"],
            model_config,
            signature,
            input_example,
            pip_requirements,
            extra_pip_requirements,
            metadata,
        )


def _update_search(config_path: str, search_options: dict[str, Any]) -> None:
    with open(config_path) as f:
        config = json.load(f)
    config.setdefault("search", {}).update(search_options)
    with open(config_path, "w") as f:
        json.dump(config, f, indent=4)


def _export_info(genai_dir: str) -> dict[str, Any]:
    info = os.path.join(genai_dir, EXPORT_INFO)
    if not os.path.isfile(info):
        return {}
    with open(info) as f:
        return json.load(f)


def genai_dir_of(path: str) -> tuple[str, Model]:
    """(the genai folder inside an onnx-flavor directory, its MLmodel)."""
    meta = Model.load(path)
    flavor = meta.flavor(FLAVOR_NAME)
    folder = os.path.join(path, flavor.get("data") or MODEL_DIR)
    if not os.path.isfile(os.path.join(folder, GENAI_CONFIG)):
        raise ModelFormatError(f"{folder} is missing its {GENAI_CONFIG}: the model files were not saved")
    return folder, meta


def locate_folder(path: str) -> tuple[str, Optional[str], dict[str, Any], Optional[Model]]:
    """(genai folder, saved provider, saved model_config, MLmodel) of an onnx-flavor directory or a bare genai
    folder."""
    if os.path.isfile(os.path.join(path, "MLmodel")):
        folder, meta = genai_dir_of(path)
        return folder, (meta.flavor(FLAVOR_NAME).get("providers") or [None])[0], meta.pyfunc_config(), meta
    if os.path.isfile(os.path.join(path, GENAI_CONFIG)):
        return path, None, {}, None
    raise ModelFormatError(f"{path} is neither an onnx-flavor model directory nor an onnxruntime-genai folder")


def load_onnx(
    path: str,
    execution_provider: Optional[str] = None,
    max_batch_size: int = 64,
    threads: Optional[int] = None,
    kv_cache_dtype: Optional[str] = None,
) -> tuple[OnnxModel, Model]:
    """Open an onnx-flavor directory for generation on its provider: the one asked for, else the saved one
    when available, else cpu (``kv_cache_dtype``: see ``runner.OrtDecoder``)."""
    folder, saved, _, meta = locate_folder(path)
    if meta is None:
        raise ModelFormatError(f"{path} has no MLmodel file: not an onnx-flavor directory")
    provider = chosen_provider(folder, execution_provider, saved)
    return OnnxModel(folder, provider, max_batch_size, threads, kv_cache_dtype), meta


def load_genai(
    path: str, execution_provider: Optional[str] = None, max_batch_size: int = 64, threads: Optional[int] = None
) -> tuple[GenaiModel, Model]:
    """onnxruntime-genai's own objects for an onnx-flavor directory, on its provider."""
    folder, meta = genai_dir_of(path)
    saved = (meta.flavor(FLAVOR_NAME).get("providers") or [None])[0]
    return open_genai(folder, execution_provider, max_batch_size, threads, saved=saved), meta


def load_model(path: str, return_type: str = "model", execution_provider: Optional[str] = None) -> Any:
    """The native objects: an ``onnxruntime_genai.Model``, or ``{"model", "tokenizer"}`` with
    return_type="components"."""
    if return_type not in ("model", "components"):
        raise ValueError("return_type must be 'model' or 'components'")
    genai, _ = load_genai(path, execution_provider)
    if return_type == "components":
        return {"model": genai.model, "tokenizer": genai.tokenizer}
    return genai.model
