"""A copy of an exported decoder that computes logits for the last position only.

The model builder's decoder returns logits for every position of the input; a scheduler needs the
last one (a prefill of 500 tokens would otherwise spend a good part of its time in the vocabulary
projection of the other 499). The copy slices the projection's input to the last position; it lives
in the cache beside hard links to the original weights (``weight_links.py``). Where no hard link can be
made (another file system), there is no copy and every position's logits are computed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any, Optional

from .weight_links import link_weights, prune_orphans

log = logging.getLogger("servelm.onnx")
_PROJECTIONS = ("MatMul", "MatMulNBits", "Gemm")


def last_token_decoder(model_path: str, logits_name: str, cache_dir: str) -> Optional[str]:
    """The path of the last-position copy of ``model_path`` (made once), or None when the graph does not
    end in a recognizable vocabulary projection."""
    import onnx

    stat = os.stat(model_path)
    key = hashlib.sha256(f"{os.path.abspath(model_path)}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    prune_orphans(os.path.join(cache_dir, "onnx-last-token"))
    folder = os.path.join(cache_dir, "onnx-last-token", key)
    target = os.path.join(folder, os.path.basename(model_path))
    if os.path.isfile(target):
        return target
    model = onnx.load(model_path, load_external_data=False)
    if not _slice_projection_input(model, logits_name):
        log.info(
            "%s: no vocabulary projection found before %r; logits of every position are computed",
            model_path,
            logits_name,
        )
        return None
    reason = link_weights(model, model_path, folder)
    if reason:
        log.info("%s: %s; logits of every position are computed", model_path, reason)
        return None
    tmp = f"{target}.tmp-{os.getpid()}"
    onnx.save(model, tmp)
    os.replace(tmp, target)
    return target


def _slice_projection_input(model: Any, logits_name: str) -> bool:
    """Insert ``Slice(x, [-1], [max], axes=[1])`` before the node producing ``logits_name``."""
    import onnx
    from onnx import helper

    producer = next((n for n in model.graph.node if logits_name in n.output), None)
    if producer is None or producer.op_type not in _PROJECTIONS:
        return False
    hidden = producer.input[0]
    sliced = f"{hidden}/servelm_last_position"
    constants = {"servelm_last_starts": [-1], "servelm_last_ends": [2**62], "servelm_last_axes": [1]}
    for name, values in constants.items():
        model.graph.initializer.append(helper.make_tensor(name, onnx.TensorProto.INT64, [1], values))
    index = list(model.graph.node).index(producer)
    model.graph.node.insert(
        index, helper.make_node("Slice", [hidden, *constants], [sliced], name="/servelm/last_position/Slice")
    )
    producer.input[0] = sliced
    return True
