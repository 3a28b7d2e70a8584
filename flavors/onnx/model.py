"""An onnx-flavor model opened for generation.

``OnnxPrompts`` is what turns requests into token ids (the folder's tokenizer.json and chat template,
no model weights): the serving process keeps only this. ``OnnxModel`` adds the batcher: on CPU the
shared scheduler over ``OrtRunner`` (onnxruntime driven directly), on other execution providers
onnxruntime-genai's own Engine (``batcher.py``), which batches dynamically there.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Optional

from servelm.agents import ChatCompletionRequest

from ..engine import Batcher
from ..engine.scheduler import Scheduler
from ..engine.threads import default_threads
from ..errors import ModelFormatError
from ..generation.tokenizer_prompts import TokenizerPrompts
from .runtime import GENAI_CONFIG, choose_provider, import_genai, open_genai, read_genai_config, saved_provider


class OnnxPrompts(TokenizerPrompts):
    """A genai folder's tokenizer and chat template, with the context length and end-of-sequence ids its
    genai_config.json gives."""

    @classmethod
    def read(cls, genai_dir: str) -> OnnxPrompts:
        if not os.path.isfile(os.path.join(genai_dir, GENAI_CONFIG)):
            raise ModelFormatError(f"{genai_dir} is not an onnxruntime-genai folder (no {GENAI_CONFIG})")
        meta = read_genai_config(genai_dir)["model"]
        eos = meta.get("eos_token_id")
        eos_ids = frozenset(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        prompts = cls.from_folder(genai_dir, int(meta.get("context_length") or 2048), eos_ids)
        assert isinstance(prompts, OnnxPrompts)
        return prompts


def runs_on_ort_directly(genai_dir: str) -> bool:
    """Whether the folder's decoder uses GroupQueryAttention (what ``OrtRunner`` drives: past and present
    KV in one buffer, each row's length from its attention mask)."""
    import onnx

    config = read_genai_config(genai_dir)
    model = onnx.load(os.path.join(genai_dir, config["model"]["decoder"]["filename"]), load_external_data=False)
    return any(node.op_type == "GroupQueryAttention" for node in model.graph.node)


def chosen_provider(genai_dir: str, requested: Optional[str] = None, saved: Optional[str] = None) -> str:
    """The execution provider to run the folder on (see ``runtime.choose_provider``)."""
    return choose_provider(import_genai(), [p for p in (saved, saved_provider(genai_dir)) if p], requested)


class OnnxModel:
    """A genai folder opened on its provider: prompts, and fresh batchers over one loaded model."""

    def __init__(
        self,
        genai_dir: str,
        provider: str,
        max_batch_size: int = 64,
        threads: Optional[int] = None,
        kv_cache_dtype: Optional[str] = None,
    ):
        self.prompts = OnnxPrompts.read(genai_dir)
        self.provider = provider
        self.max_batch_size = max_batch_size
        self.path = genai_dir
        self.context_length = self.prompts.context_length
        self.decoder: Any = None
        self.genai: Any = None
        if provider == "cpu" and runs_on_ort_directly(genai_dir):
            from ..engine.runners.onnx import OrtDecoder

            weights = sum(
                os.path.getsize(os.path.join(genai_dir, f))
                for f in os.listdir(genai_dir)
                if f.endswith((".onnx", ".data"))
            )
            self.decoder = OrtDecoder(
                genai_dir,
                read_genai_config(genai_dir),
                threads or default_threads(weights),
                kv_cache_dtype=kv_cache_dtype,
            )
        else:
            if kv_cache_dtype not in (None, "auto"):
                where = f"on {provider}" if provider != "cpu" else "without GroupQueryAttention in its decoder"
                raise ModelFormatError(
                    f"kv_cache_dtype {kv_cache_dtype!r}: {genai_dir} runs {where} on onnxruntime-genai's own Engine, "
                    "whose KV cache follows the export; only the onnx engine's CPU runner chooses its cache dtype"
                )
            self.genai = open_genai(genai_dir, provider, max_batch_size, threads)

    def new_batcher(self, max_num_seqs: Optional[int] = None, kv_cache_bytes: Optional[int] = None) -> Batcher:
        """A fresh batcher (its own KV cache, ``kv_cache_bytes`` of it) over the loaded model; build it on the
        thread that steps it."""
        if self.decoder is not None:
            from ..engine.runners.onnx import OrtRunner

            return Scheduler(
                OrtRunner(self.decoder),
                self.prompts.tokenizer,
                set(self.prompts.eos_ids),
                max_num_seqs or self.max_batch_size,
                kv_cache_bytes=kv_cache_bytes,
            )
        from ..engine.genai_batcher import GenaiBatcher

        return GenaiBatcher(self.genai)  # type: ignore[return-value]  # its sequences carry the Engine's state

    def chat_prompt_ids(self, request: ChatCompletionRequest) -> list[int]:
        return self.prompts.chat_prompt_ids(request)

    def text_prompt_ids(self, text: str) -> list[int]:
        return self.prompts.encode_text(text)


@functools.lru_cache(maxsize=4)
def opened(
    genai_dir: str, provider: str, max_batch_size: int, threads: Optional[int], kv_cache_dtype: Optional[str] = None
) -> OnnxModel:
    """One OnnxModel per folder and settings in this process (an engine rebuilding its batcher reuses it)."""
    return OnnxModel(genai_dir, provider, max_batch_size, threads, kv_cache_dtype)


def onnx_batcher(
    genai_dir: str,
    provider: str,
    threads: Optional[int],
    max_num_seqs: int,
    kv_cache_dtype: Optional[str] = None,
    kv_cache_bytes: Optional[int] = None,
) -> Batcher:
    """The batcher of a genai folder (a picklable factory: called where the engine runs, which loads the model
    there)."""
    return opened(genai_dir, provider, max_num_seqs, threads, kv_cache_dtype).new_batcher(max_num_seqs, kv_cache_bytes)
