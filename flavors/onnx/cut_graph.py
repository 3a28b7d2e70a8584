"""An exported decoder cut at its GroupQueryAttention nodes, so that servelm's own kernels run between the
pieces over the runner's KV cache (``engine/runners/onnx_layered.py``).

Why: onnxruntime's GroupQueryAttention on CPU multiplies each query head of each sequence on its own and
takes much of a batched decode step; and one call of the whole graph takes one prompt length, so prompts
and decode rows cannot share a step. Cut at the attention nodes, every token of a step (decode rows and
prompt chunks alike) goes through each piece's projections and MLP together, and the kernels rotate, write
and attend each token over its own row of the cache.

``cut_decoder`` writes the pieces once into servelm's cache, beside hard links to the original weights
(``weight_links.py``), and returns what the runner needs; or why not, where the graph is not the
model builder's plain decoder (GroupQueryAttention on packed projections with its own half-split rotary
embedding, nothing else reading the attention mask).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from .weight_links import link_weights, prune_orphans

_VERSION = 1  # of the pieces' layout (a new one writes new pieces)
_CUT_OP = "GroupQueryAttention"


@dataclass(frozen=True)
class Piece:
    """One piece of the cut graph: its model file, the tensors it takes and gives, and the attention that
    follows it (the piece's output ``qkv`` in, ``attended`` out) if any."""

    path: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    qkv: Optional[str]  # the packed query, key and value projections the next attention reads
    attended: Optional[str]  # that attention's output, an input of a later piece


@dataclass(frozen=True)
class CutDecoder:
    """The pieces in order (the last one is the vocabulary projection alone, so that a step computes logits
    only for the tokens that need them) and the attention's settings."""

    pieces: tuple[Piece, ...]
    hidden: str  # the vocabulary projection's input
    heads: int
    kv_heads: int
    scale: Optional[float]
    cos: np.ndarray  # [context, rotary_dim / 2] fp32: the angles feature d turns by, with d + rotary_dim / 2
    sin: np.ndarray


def cut_decoder(model_path: str, logits_name: str, cache_dir: str) -> Union[CutDecoder, str]:
    """The decoder at ``model_path`` cut at its attention nodes (written once into ``cache_dir``), or why it
    cannot be."""
    import onnx

    model = onnx.load(model_path, load_external_data=False)
    reason = _unsupported(model, logits_name)
    if reason:
        return reason
    stat = os.stat(model_path)
    key = hashlib.sha256(
        f"{_VERSION}:{os.path.abspath(model_path)}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    ).hexdigest()[:16]
    prune_orphans(os.path.join(cache_dir, "onnx-cut"))
    folder = os.path.join(cache_dir, "onnx-cut", key)
    index = os.path.join(folder, "pieces.json")
    attentions = [n for n in model.graph.node if n.op_type == _CUT_OP]
    first = attentions[0]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in first.attribute}
    cos, sin = (_rotary_table(model, first.input[i], os.path.dirname(os.path.abspath(model_path))) for i in (7, 8))
    heads, kv_heads = int(attributes["num_heads"]), int(attributes["kv_num_heads"])
    scale = float(attributes.get("scale") or 0.0) or None  # None: the attention's default, one over root head size
    if not os.path.isfile(index):
        # written in a folder of this process's own, then renamed into place: servers starting together
        # (--workers) never read each other's half-written pieces
        partial = f"{folder}.tmp-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        reason = link_weights(model, model_path, partial)
        if reason:
            return reason
        pieces = _write_pieces(model, logits_name, partial)
        with open(os.path.join(partial, "pieces.json"), "w") as f:
            json.dump([p.__dict__ for p in pieces], f)
        try:
            os.rename(partial, folder)
        except OSError:  # another process's pieces got there first (the same pieces), or a folder without them
            if not os.path.isfile(index):
                shutil.rmtree(folder, ignore_errors=True)
                os.rename(partial, folder)
            shutil.rmtree(partial, ignore_errors=True)
    with open(index) as f:
        pieces = [Piece(**{**p, "inputs": tuple(p["inputs"]), "outputs": tuple(p["outputs"])}) for p in json.load(f)]
    pieces = [Piece(os.path.join(folder, p.path), p.inputs, p.outputs, p.qkv, p.attended) for p in pieces]
    return CutDecoder(tuple(pieces), pieces[-1].inputs[0], heads, kv_heads, scale, cos, sin)


def _unsupported(model: Any, logits_name: str) -> Optional[str]:
    """Why the graph cannot be cut (None when it can)."""
    import onnx

    graph = model.graph
    attentions = [n for n in graph.node if n.op_type == _CUT_OP]
    if not attentions:
        return "no GroupQueryAttention"
    initializers = {t.name for t in graph.initializer}
    for node in attentions:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        inputs = list(node.input) + [""] * 12
        if inputs[1] or inputs[2]:
            return "attention over separate key and value projections"
        if int(attributes.get("do_rotary", 0)) != 1 or int(attributes.get("rotary_interleaved", 0)) != 0:
            return "attention without its own half-split rotary embedding"
        if float(attributes.get("softcap", 0.0)) != 0.0 or int(attributes.get("local_window_size", -1)) != -1:
            return "soft-capped or windowed attention"
        if inputs[7] not in initializers or inputs[8] not in initializers or any(inputs[9:12]):
            return "attention with inputs beyond its rotary tables"
    producer = next((n for n in graph.node if logits_name in n.output), None)
    if producer is None or producer.op_type not in ("MatMul", "MatMulNBits", "Gemm"):
        return "no vocabulary projection before the logits"
    used = {i for n in _kept_nodes(graph, logits_name) for i in (n.input[:1] if n.op_type == _CUT_OP else n.input)}
    graph_inputs = {i.name for i in graph.input}
    if (used & graph_inputs) - {"input_ids"}:
        return f"the layers read {sorted((used & graph_inputs) - {'input_ids'})}"
    return None


def _kept_nodes(graph: Any, logits_name: str) -> list[Any]:
    """The nodes the logits depend on, the attention nodes reading only their packed projections (what
    feeds only their lengths, the attention mask's sums, is left out), in graph order."""
    needed = {logits_name}
    kept = []
    for node in reversed(graph.node):
        if not any(o in needed for o in node.output):
            continue
        kept.append(node)
        needed.update([node.input[0]] if node.op_type == _CUT_OP else [i for i in node.input if i])
    return kept[::-1]


def _write_pieces(model: Any, logits_name: str, folder: str) -> list[Piece]:
    """Cut the graph at each attention node and before the vocabulary projection; save each piece's
    model into ``folder`` (its weights stay in the linked file); return the pieces with paths relative to it."""
    import onnx
    from onnx import helper

    graph = model.graph
    nodes = _kept_nodes(graph, logits_name)
    groups: list[tuple[list[Any], Any]] = [([], None)]  # (nodes, the attention node ending the group)
    for node in nodes:
        if node.op_type == _CUT_OP:
            groups[-1] = (groups[-1][0], node)
            groups.append(([], None))
        elif logits_name in node.output:
            groups.append(([node], None))  # the vocabulary projection alone
        else:
            groups[-1][0].append(node)
    groups = [g for g in groups if g[0]]
    initializers = {t.name: t for t in graph.initializer}
    graph_inputs = {i.name: i for i in graph.input}
    activation = next(o for o in graph.output if o.name == logits_name).type.tensor_type.elem_type
    consumers: list[set[str]] = [{i for n in group for i in n.input if i} for group, _ in groups]

    def value_info(name: str) -> Any:
        if name in graph_inputs:
            return graph_inputs[name]
        return helper.make_tensor_value_info(name, activation, None)

    pieces = []
    for index, (group, attention) in enumerate(groups):
        produced = {o for n in group for o in n.output if o}
        later = set().union(*consumers[index + 1 :]) if index + 1 < len(groups) else set()
        inputs = list(
            dict.fromkeys(i for n in group for i in n.input if i and i not in produced and i not in initializers)
        )
        wanted = later | ({attention.input[0]} if attention is not None else set()) | {logits_name}
        outputs = [o for n in group for o in n.output if o in wanted]
        piece_graph = helper.make_graph(
            group,
            f"servelm-piece-{index}",
            [value_info(i) for i in inputs],
            [value_info(o) for o in outputs],
            [initializers[i] for i in dict.fromkeys(i for n in group for i in n.input) if i in initializers],
        )
        piece = helper.make_model(piece_graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
        name = f"piece-{index:03d}.onnx"
        onnx.save(piece, os.path.join(folder, name))
        pieces.append(
            Piece(
                name,
                tuple(inputs),
                tuple(outputs),
                attention.input[0] if attention is not None else None,
                attention.output[0] if attention is not None else None,
            )
        )
    return pieces


def _rotary_table(model: Any, name: str, base_dir: str) -> np.ndarray:
    """One of the attention's rotary tables [context, rotary_dim / 2], in fp32."""
    from onnx import helper, numpy_helper

    tensor = next(t for t in model.graph.initializer if t.name == name)
    external = {entry.key: entry.value for entry in tensor.external_data}
    if external:  # read here: onnx's own reader refuses a weights file with several links (the cache's)
        dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
        with open(os.path.join(base_dir, external["location"]), "rb") as f:
            f.seek(int(external.get("offset", 0)))
            count = int(np.prod(tensor.dims))
            raw = f.read(int(external.get("length", count * np.dtype(dtype).itemsize)))
        table = np.frombuffer(raw, dtype=dtype, count=count).reshape(tuple(tensor.dims))
    else:
        table = numpy_helper.to_array(tensor)
    return np.ascontiguousarray(table, dtype=np.float32)
