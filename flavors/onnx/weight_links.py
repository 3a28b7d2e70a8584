"""Derived graphs of an export kept in servelm's cache (``last_token.py``, ``cut_graph.py``) reach the
export's weights through hard links beside them: onnxruntime refuses weights reached through a symbolic
link outside a model's directory, and the export's own folder is left untouched (it may be read-only, and
onnxruntime-genai's Engine still reads it). A hard link is the weights file itself, so a copy costs no disk;
where none can be made (another file system), there is no derived graph."""

from __future__ import annotations

import os
import shutil
from typing import Any, Optional


def link_weights(model: Any, model_path: str, folder: str) -> Optional[str]:
    """Hard links in ``folder`` to the weights files ``model`` (the graph loaded from ``model_path``, without
    its weights) refers to; None once they are there, else why they cannot be."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        return f"cannot write to the cache ({exc})"
    locations = {
        entry.value for tensor in model.graph.initializer for entry in tensor.external_data if entry.key == "location"
    }
    for location in locations:
        link = os.path.join(folder, location)
        if not os.path.exists(link):
            try:
                os.link(os.path.join(os.path.dirname(os.path.abspath(model_path)), location), link)
            except OSError as exc:
                return f"cannot link its weights into the cache ({exc})"
    return None


def prune_orphans(root: str) -> None:
    """Remove the folders under ``root`` whose export is gone (a weights link is then its file's last name)."""
    if not os.path.isdir(root):
        return
    for entry in os.listdir(root):
        folder = os.path.join(root, entry)
        try:
            names = [os.path.join(folder, f) for f in os.listdir(folder) if not f.endswith((".onnx", ".json"))]
            orphan = any(os.stat(name).st_nlink == 1 for name in names)
        except OSError:  # not a folder, or another process is writing or removing it
            continue
        if orphan:
            shutil.rmtree(folder, ignore_errors=True)
