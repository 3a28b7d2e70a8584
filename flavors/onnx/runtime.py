"""Opening an onnxruntime-genai model folder for serving: the execution provider chosen deliberately
(and logged), CPU threads set on purpose, the Engine's batch size, and chat prompts encoded with the
folder's own chat template (no transformers needed at serve time)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import ModelFormatError

log = logging.getLogger("servelm.onnx")
GENAI_CONFIG = "genai_config.json"
# onnxruntime-genai's provider names, keyed by what users type
PROVIDERS = {
    "cpu": "cpu",
    "cuda": "cuda",
    "dml": "dml",
    "webgpu": "webgpu",
    "openvino": "OpenVINO",
    "qnn": "QNN",
    "trt-rtx": "NvTensorRtRtx",
}


def import_genai() -> Any:
    """The onnxruntime_genai module, or an error that says how to install it."""
    try:
        import onnxruntime_genai
    except ImportError:
        raise ModelFormatError("the onnx flavor needs onnxruntime-genai: pip install 'servelm[onnx]'") from None
    return onnxruntime_genai


def provider_available(og: Any, provider: str) -> bool:
    """Whether this onnxruntime-genai build can run ``provider`` here (cpu always can)."""
    check = {
        "cuda": "is_cuda_available",
        "dml": "is_dml_available",
        "webgpu": "is_webgpu_available",
        "openvino": "is_openvino_available",
        "qnn": "is_qnn_available",
    }.get(provider)
    return provider == "cpu" or (check is not None and bool(getattr(og, check)()))


def read_genai_config(genai_dir: str) -> dict[str, Any]:
    """The folder's genai_config.json, parsed."""
    with open(os.path.join(genai_dir, GENAI_CONFIG)) as f:
        return json.load(f)


def saved_provider(genai_dir: str, config: Optional[dict[str, Any]] = None) -> str:
    """The provider a genai folder was exported for (the first in its decoder's provider_options)."""
    config = config if config is not None else read_genai_config(genai_dir)
    options = config.get("model", {}).get("decoder", {}).get("session_options", {}).get("provider_options") or []
    for entry in options:
        for name in entry:
            return name.lower()
    return "cpu"


def choose_provider(og: Any, defaults: list[str], requested: Optional[str] = None) -> str:
    """The execution provider to run: the one asked for (an error if it is not available), else the first
    of ``defaults`` (the saved one, the exported one) that is available, else cpu. Never a silent fall
    back from a requested GPU."""
    if requested:
        name = requested.lower().split(":")[0]
        if name not in PROVIDERS:
            raise ModelFormatError(f"unknown execution provider {requested!r}; choose one of {', '.join(PROVIDERS)}")
        if not provider_available(og, name):
            raise ModelFormatError(
                f"execution provider {name!r} is not available in this onnxruntime-genai build "
                f"(install onnxruntime-genai-cuda for cuda), or choose cpu"
            )
        return name
    for name in defaults:
        if provider_available(og, name):
            return name
    log.warning("model made for %s, which is not available here: running on cpu", defaults[0])
    return "cpu"


@dataclass
class GenaiModel:
    """A loaded genai folder: the native model and tokenizer, where it runs, and its limits."""

    model: Any
    tokenizer: Any
    provider: str
    context_length: int
    eos_ids: frozenset[int]
    path: str
    vocab_size: int = 0
    max_batch_size: int = 64  # sequences generated at once
    dynamic_batching: bool = False  # the folder's Engine joins requests into a running batch (paged-attention exports)


def open_genai(
    genai_dir: str,
    provider: Optional[str] = None,
    max_batch_size: int = 64,
    threads: Optional[int] = None,
    saved: Optional[str] = None,
) -> GenaiModel:
    """Load a genai folder on the chosen provider (``provider``, else ``saved`` or the exported one when
    available, else cpu) with the Engine's batch size and CPU threads set."""
    og = import_genai()
    if not os.path.isfile(os.path.join(genai_dir, GENAI_CONFIG)):
        raise ModelFormatError(f"{genai_dir} is not an onnxruntime-genai folder (no {GENAI_CONFIG})")
    saved_config = read_genai_config(genai_dir)
    dynamic = "dynamic_batching" in (saved_config.get("engine") or {})
    name = choose_provider(og, [p for p in (saved, saved_provider(genai_dir, saved_config)) if p], provider)
    config = og.Config(genai_dir)
    config.clear_providers()
    if name != "cpu":
        config.append_provider(PROVIDERS[name])
    session: dict[str, Any] = {}
    if name == "cpu":
        session = {"intra_op_num_threads": threads or max(1, (os.cpu_count() or 2) // 2), "inter_op_num_threads": 1}
    batching = {} if dynamic else {"engine": {"static_batching": {"max_batch_size": int(max_batch_size)}}}
    config.overlay(json.dumps({**batching, "model": {"decoder": {"session_options": session}}}))
    model = og.Model(config)
    tokenizer = og.Tokenizer(model)
    meta = saved_config["model"]
    eos = meta.get("eos_token_id")
    eos_ids = frozenset(eos if isinstance(eos, list) else [eos] if eos is not None else []) | frozenset(
        int(i) for i in tokenizer.eos_token_ids
    )
    log.info(
        "onnxruntime-genai %s: running %s on %s%s",
        og.__version__ if hasattr(og, "__version__") else "",
        os.path.basename(genai_dir.rstrip("/")),
        name,
        f" with {session['intra_op_num_threads']} threads" if session else "",
    )
    return GenaiModel(
        model,
        tokenizer,
        name,
        int(meta.get("context_length") or 2048),
        eos_ids,
        genai_dir,
        int(meta.get("vocab_size") or 0),
        int(max_batch_size),
        dynamic,
    )
