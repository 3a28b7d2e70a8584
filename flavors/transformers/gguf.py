"""GGUF files (llama.cpp's format) as a source of Hugging Face checkpoints.

transformers reads a GGUF file's weights (dequantized) and its tokenizer with chat template; the result
is written once as a plain checkpoint directory in the cache (keyed by the file's name, size and time),
so ``save_model("x.gguf", ...)`` and ``servelm serve -m x.gguf`` pay the conversion once.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
from typing import Any

from ..cache import default_cache_dir
from ..errors import ModelFormatError

log = logging.getLogger("servelm.transformers")
GGUF_SUFFIX = ".gguf"


def is_gguf(path: str) -> bool:
    """Whether ``path`` is a .gguf file, or a directory holding exactly one (and no config.json)."""
    if os.path.isfile(path):
        return path.endswith(GGUF_SUFFIX)
    return os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")) and len(_gguf_files(path)) == 1


def _gguf_files(directory: str) -> list[str]:
    return sorted(f for f in os.listdir(directory) if f.endswith(GGUF_SUFFIX))


def gguf_file(path: str) -> str:
    """The GGUF file ``path`` names (the file itself, or the one in a directory)."""
    if os.path.isfile(path):
        return path
    files = _gguf_files(path) if os.path.isdir(path) else []
    if len(files) != 1:
        raise ModelFormatError(f"{path} should be a .gguf file or a directory with exactly one (found {len(files)})")
    return os.path.join(path, files[0])


def load_gguf(path: str) -> tuple[Any, Any]:
    """(model in fp32, tokenizer) read from a GGUF file; needs the ``gguf`` package."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ModelFormatError(
            "reading GGUF files needs the gguf package: pip install 'servelm[transformers]'"
        ) from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .progress import show_progress_bars

    file = gguf_file(path)
    folder, name = os.path.dirname(os.path.abspath(file)), os.path.basename(file)
    interactive = show_progress_bars()
    log.info("reading %s (%.0f MB) and dequantizing its weights to fp32", name, os.path.getsize(file) / 1e6)
    # the dequantization bar is drawn by gguf's own tqdm, whatever transformers' setting: kept off logs
    quiet = contextlib.nullcontext() if interactive else contextlib.redirect_stderr(io.StringIO())
    with quiet:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # the weights are dequantized: the model is a plain one now, and save_pretrained must see it so
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model.eval(), tokenizer


def _cache_target(file: str, kind: str, cache_dir: str | None) -> str:
    """Where a conversion of ``file`` is cached: keyed by its path, size and time."""
    stat = os.stat(file)
    key = hashlib.sha256(f"{os.path.abspath(file)}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return os.path.join(cache_dir or default_cache_dir(), kind, f"{os.path.basename(file)[: -len(GGUF_SUFFIX)]}-{key}")


def gguf_tokenizer_folder(path: str, cache_dir: str | None = None) -> str:
    """A tokenizer folder (tokenizer.json, tokenizer_config.json, the chat template) read from the GGUF file at
    ``path``, cached. transformers reads it (and imports torch doing so), in a child process: the serving process
    of the llamacpp engine keeps only the tokenizers library."""
    import subprocess
    import sys

    file = gguf_file(path)
    target = _cache_target(file, "gguf-tokenizers", cache_dir)
    if os.path.isfile(os.path.join(target, "tokenizer.json")):
        return target
    log.info("reading the tokenizer and chat template of %s (once; cached in %s)", file, target)
    tmp = f"{target}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    code = "import sys; from servelm.flavors.transformers.gguf import write_tokenizer; write_tokenizer(*sys.argv[1:])"
    done = subprocess.run([sys.executable, "-c", code, file, tmp], capture_output=True, text=True)
    if done.returncode != 0:
        raise ModelFormatError(f"{file}: its tokenizer cannot be read: {done.stderr.strip().splitlines()[-1:]}")
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def write_tokenizer(file: str, folder: str) -> None:
    """The GGUF file's tokenizer and chat template, written to ``folder`` (in the child process of
    ``gguf_tokenizer_folder``)."""
    from transformers import AutoTokenizer

    with contextlib.redirect_stderr(io.StringIO()):
        tokenizer = AutoTokenizer.from_pretrained(
            os.path.dirname(os.path.abspath(file)), gguf_file=os.path.basename(file)
        )
    tokenizer.save_pretrained(folder)


def gguf_checkpoint(path: str, cache_dir: str | None = None) -> str:
    """A Hugging Face checkpoint directory converted from the GGUF file at ``path``, cached."""
    file = gguf_file(path)
    stat = os.stat(file)
    target = _cache_target(file, "gguf", cache_dir)
    marker = os.path.join(target, "servelm-gguf.json")
    if os.path.isfile(marker):
        return target
    log.info("converting %s to a transformers checkpoint (once; cached in %s)", file, target)
    model, tokenizer = load_gguf(file)
    tmp = f"{target}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("writing the converted checkpoint to %s", target)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    with open(os.path.join(tmp, "servelm-gguf.json"), "w") as f:
        json.dump({"source": os.path.abspath(file), "size": stat.st_size}, f)
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target
