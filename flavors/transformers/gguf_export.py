"""A Llama-architecture Hugging Face checkpoint written as a GGUF file (fp32 tensors), for llama.cpp.

llama.cpp's own converter (``convert_hf_to_gguf.py``) is not on the package index; this covers what servelm's
tests and demos need: the tiny Llama and Llama-shaped models with a byte-level BPE tokenizer. The tokenizer and
chat template go into the file's metadata, as llama.cpp reads them.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import ModelFormatError

#: HF parameter names (per layer) -> GGUF tensor names
_LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def _rope_permute(weight: Any, heads: int) -> Any:
    """Q and K rows reordered from HF's rotate-half layout to llama.cpp's interleaved rotary pairs."""
    rows, cols = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def export_gguf(checkpoint: str, out_file: str) -> str:
    """Write the Llama checkpoint at ``checkpoint`` (config.json, safetensors, tokenizer files) to ``out_file``."""
    import numpy as np
    from gguf import GGUFWriter
    from safetensors.numpy import load_file

    with open(os.path.join(checkpoint, "config.json")) as f:
        config = json.load(f)
    if config.get("model_type") != "llama":
        raise ModelFormatError(f"{checkpoint}: only Llama checkpoints are exported to GGUF here")
    weights: dict[str, Any] = {}
    for name in sorted(os.listdir(checkpoint)):
        if name.endswith(".safetensors"):
            weights.update(load_file(os.path.join(checkpoint, name)))
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    hidden = config["hidden_size"]
    writer = GGUFWriter(out_file, "llama")
    writer.add_name(os.path.basename(os.path.normpath(checkpoint)))
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(config.get("head_dim") or hidden // heads)
    writer.add_rope_freq_base(
        float((config.get("rope_parameters") or {}).get("rope_theta", config.get("rope_theta", 10000.0)))
    )
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    writer.add_file_type(0)  # all fp32
    _add_tokenizer(writer, checkpoint, config)

    def tensor(name: str, value: Any) -> None:
        writer.add_tensor(name, np.ascontiguousarray(value.astype(np.float32)))

    tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    for layer in range(config["num_hidden_layers"]):
        for hf_name, gguf_name in _LAYER_TENSORS.items():
            value = weights[f"model.layers.{layer}.{hf_name}"]
            if hf_name.startswith("self_attn.q_proj"):
                value = _rope_permute(value, heads)
            elif hf_name.startswith("self_attn.k_proj"):
                value = _rope_permute(value, kv_heads)
            tensor(f"blk.{layer}.{gguf_name}", value)
    tensor("output_norm.weight", weights["model.norm.weight"])
    if "lm_head.weight" in weights and not config.get("tie_word_embeddings", False):
        tensor("output.weight", weights["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_file


def _add_tokenizer(writer: Any, checkpoint: str, config: dict[str, Any]) -> None:
    """A byte-level BPE tokenizer.json as llama.cpp's ``gpt2`` tokenizer metadata, with the chat template."""
    from gguf import TokenType

    with open(os.path.join(checkpoint, "tokenizer.json")) as f:
        tokenizer = json.load(f)
    model = tokenizer["model"]
    if model.get("type") != "BPE":
        raise ModelFormatError(f"{checkpoint}: only byte-level BPE tokenizers are exported to GGUF here")
    vocab: dict[str, int] = dict(model["vocab"])
    special = {t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])}
    vocab.update(special)
    size = max(config.get("vocab_size", 0), max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [TokenType.UNUSED] * size
    for text, index in vocab.items():
        tokens[index] = text
        types[index] = TokenType.CONTROL if text in special else TokenType.NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    with open(os.path.join(checkpoint, "tokenizer_config.json")) as f:
        tokenizer_config = json.load(f)
    for key, add in (("eos_token", writer.add_eos_token_id), ("pad_token", writer.add_pad_token_id)):
        value = tokenizer_config.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        if value in vocab:
            add(vocab[value])
    writer.add_add_bos_token(False)
    template_file = os.path.join(checkpoint, "chat_template.jinja")
    template = open(template_file).read() if os.path.isfile(template_file) else tokenizer_config.get("chat_template")
    if template:
        writer.add_chat_template(template)
