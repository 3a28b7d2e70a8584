"""Tiny causal LMs built locally (no hub): a BPE tokenizer trained on generated text, a ChatML template,
and random weights for a Llama / Qwen2 / Phi3 config. For tests, demos and benchmarks; cached on disk.

Sizes follow what every engine here accepts: hidden 64, 2 layers, 2 heads (head_dim 32).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from typing import Any, Optional

from ..cache import default_cache_dir

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_WORDS = (
    "the a model server token batch stream agent chat reply question answer fast small tiny cache key value "
    "layer head attention request queue latency throughput hello world time first second step decode prefill "
    "python engine serve client open ai is are was be to of and in that it for on with as at by this from"
).split()
_VERSION = 2  # bump when the recipe changes, so cached models are rebuilt


def _corpus(seed: int, sentences: int = 12000) -> list[str]:
    """~600 KB of sentences: common words plus pseudo-words from syllables, so BPE learns ~1500 merges."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["th", "st", "er", "ing", "ion", "ed"]
    vocab = _WORDS + ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
    lines = []
    for _ in range(sentences):
        words = [rng.choice(vocab) for _ in range(rng.randint(4, 14))]
        lines.append(" ".join(words).capitalize() + rng.choice([".", "?", "!"]))
    return lines


def build_tokenizer(path: str, vocab_size: int = 1500, seed: int = 0) -> None:
    """Train a byte-level BPE tokenizer on generated text and save it (with the chat template) at ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(path)


def build_tiny_model(
    path: str,
    arch: str = "llama",
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    max_positions: int = 2048,
    kv_heads: Optional[int] = None,
    intermediate: Optional[int] = None,
) -> str:
    """Build a tiny random-weight causal LM + tokenizer at ``path`` (a Hugging Face checkpoint directory);
    ``kv_heads`` fewer than ``heads`` gives grouped-query attention (default: as many as ``heads``); ``intermediate``
    is the MLP's width (default: twice ``hidden``)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, Phi3Config, Qwen2Config

    os.makedirs(path, exist_ok=True)
    build_tokenizer(path, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate or hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        max_position_embeddings=max_positions,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    config: Any
    if arch == "llama":
        config = LlamaConfig(**common)
    elif arch == "qwen2":
        config = Qwen2Config(**common)
    elif arch == "phi3":
        config = Phi3Config(**common, original_max_position_embeddings=max_positions)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}: use llama, qwen2 or phi3")
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    return path


#: SmolLM2-135M-Instruct's layer shapes, for a random model that costs what it costs per token (``smollm2_shaped``)
SMOLLM2_SHAPE = {"hidden": 576, "layers": 30, "heads": 9, "kv_heads": 3, "intermediate": 1536, "max_positions": 8192}


def tiny_model(arch: str = "llama", seed: int = 0, cache_dir: Optional[str] = None) -> str:
    """The path of a cached tiny model, built on first use (seconds); safe when processes race."""
    return _cached(f"tiny-{arch}-s{seed}-v{_VERSION}", {"arch": arch, "seed": seed}, cache_dir)


def smollm2_shaped(cache_dir: Optional[str] = None) -> str:
    """A cached model with SmolLM2-135M-Instruct's layers (``SMOLLM2_SHAPE``) and random weights, and the tiny
    tokenizer (so its vocabulary projection is smaller than SmolLM2's): for timing where SmolLM2's 98 MB file cannot
    be had (a machine without a package index)."""
    return _cached(f"smollm2-shape-v{_VERSION}", {"arch": "llama", "seed": 0, **SMOLLM2_SHAPE}, cache_dir)


def _cached(name: str, options: dict[str, Any], cache_dir: Optional[str]) -> str:
    """``build_tiny_model(**options)`` built once under ``name`` in the cache (safe when processes race)."""
    root = cache_dir or default_cache_dir()
    path = os.path.join(root, name)
    marker = os.path.join(path, "servelm-tiny.json")
    if os.path.isfile(marker):
        return path
    tmp = f"{path}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    build_tiny_model(tmp, **options)
    with open(os.path.join(tmp, "servelm-tiny.json"), "w") as f:
        json.dump({**options, "version": _VERSION}, f)
    try:
        os.replace(tmp, path)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return path
