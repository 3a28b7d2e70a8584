"""Export a Hugging Face causal LM to the onnxruntime-genai format with its model builder, in process.

The output folder holds genai_config.json, model.onnx (+ .data), the tokenizer files and the chat
template: everything onnxruntime-genai needs, and all that ``save_model`` packages.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any, Optional

from ..errors import ModelFormatError
from .runtime import GENAI_CONFIG, PROVIDERS

log = logging.getLogger("servelm.onnx")
EXPORT_INFO = "servelm-export.json"  # how the folder was exported (precision, provider)
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")
_CPU_PRECISIONS = ("fp32", "int8", "int4")  # fp16 builds for cpu but does not generate there


def export(
    hf_model: Any,
    output_dir: str,
    precision: str = "fp32",
    execution_provider: str = "cpu",
    cache_dir: Optional[str] = None,
    extra_options: Optional[dict[str, Any]] = None,
) -> str:
    """Convert ``hf_model`` (a local checkpoint directory, a ``{"model", "tokenizer"}`` dict, or a
    text-generation pipeline) into an onnxruntime-genai folder at ``output_dir``; returns that path.

    ``precision`` fp32 / int8 / int4 run on cpu; fp16 / bf16 need a GPU provider such as cuda.
    ``extra_options`` go to the builder as its ``KEY=VALUE`` options.
    """
    if precision not in PRECISIONS:
        raise ModelFormatError(f"precision {precision!r} is not supported; choose one of {', '.join(PRECISIONS)}")
    provider = execution_provider.lower()
    if provider not in PROVIDERS:
        raise ModelFormatError(
            f"unknown execution provider {execution_provider!r}; choose one of {', '.join(PROVIDERS)}"
        )
    if provider == "cpu" and precision not in _CPU_PRECISIONS:
        raise ModelFormatError(
            f"precision {precision} does not run on cpu in onnxruntime-genai; use {', '.join(_CPU_PRECISIONS)} "
            "for cpu, or export for cuda"
        )
    if os.path.exists(output_dir) and os.listdir(output_dir):
        raise ModelFormatError(f"{output_dir} already exists and is not empty: choose a new directory")
    try:
        from onnxruntime_genai.models import builder
    except ImportError as exc:
        raise ModelFormatError(
            f"exporting needs onnxruntime-genai's model builder and its dependencies (onnx, onnx_ir, torch, "
            f"transformers): pip install 'servelm[onnx,transformers]' ({exc})"
        ) from None
    with tempfile.TemporaryDirectory(prefix="servelm-export-") as scratch:
        source = _checkpoint_dir(hf_model, os.path.join(scratch, "checkpoint"))
        cache = cache_dir or os.path.join(scratch, "cache")
        options = [f"{k}={v}" for k, v in (extra_options or {}).items()]
        target = builder_provider(provider)
        tmp = f"{os.path.abspath(output_dir)}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        chatter = io.StringIO()
        try:
            with (
                contextlib.redirect_stdout(chatter),
                contextlib.redirect_stderr(chatter),
                _quiet_progress_bars(),
            ):  # the builder prints progress
                prepared = builder.parse_extra_options(None, source, tmp, precision, target, cache, options)
                builder.create_model(None, source, tmp, precision, target, cache, **prepared)
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            log.debug("model builder output:\n%s", chatter.getvalue())
            raise ModelFormatError(f"onnxruntime-genai's model builder could not export {source}: {exc}") from exc
        log.debug("model builder output:\n%s", chatter.getvalue())
        _copy_chat_template(source, tmp)
        with open(os.path.join(tmp, EXPORT_INFO), "w") as f:
            json.dump(
                {
                    "precision": precision,
                    "execution_provider": provider,
                    "source": source if isinstance(hf_model, (str, os.PathLike)) else None,
                },
                f,
            )
        if not os.path.isfile(os.path.join(tmp, GENAI_CONFIG)):
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelFormatError(f"the model builder wrote no {GENAI_CONFIG} for {source}")
        if os.path.exists(output_dir):
            os.rmdir(output_dir)
        os.replace(tmp, output_dir)
    log.info("exported %s to %s (%s, %s)", source, output_dir, precision, provider)
    return output_dir


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """No progress bars (tqdm's, transformers' weight loading) and no per-node INFO lines from
    onnxruntime's quantizer (hundreds on a real model) while the builder runs."""
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    quantizer = logging.getLogger("onnxruntime.quantization")
    level = quantizer.level
    quantizer.setLevel(logging.WARNING)
    bars = None
    try:
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        yield
    finally:
        quantizer.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous


def builder_provider(provider: str) -> str:
    """The builder's name for an execution provider."""
    return {"trt-rtx": "NvTensorRtRtx"}.get(provider, provider)


def _checkpoint_dir(hf_model: Any, scratch: str) -> str:
    """A local checkpoint directory for the builder: the path itself, or the objects saved to ``scratch``."""
    if isinstance(hf_model, (str, os.PathLike)):
        path = os.fspath(hf_model)
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ModelFormatError(f"{path} is not a Hugging Face checkpoint directory (no config.json)")
        return path
    if isinstance(hf_model, dict):
        model, tokenizer = hf_model.get("model"), hf_model.get("tokenizer")
    else:
        model, tokenizer = getattr(hf_model, "model", None), getattr(hf_model, "tokenizer", None)
    if model is None or tokenizer is None:
        raise ModelFormatError(
            "hf_model must be a checkpoint directory, a {'model', 'tokenizer'} dict or a text-generation pipeline"
        )
    model.save_pretrained(scratch)
    tokenizer.save_pretrained(scratch)
    return scratch


def _copy_chat_template(source: str, target: str) -> None:
    """Keep the checkpoint's chat template beside the tokenizer (the builder copies only some files)."""
    src = os.path.join(source, "chat_template.jinja")
    if os.path.isfile(src) and not os.path.isfile(os.path.join(target, "chat_template.jinja")):
        shutil.copy2(src, target)
