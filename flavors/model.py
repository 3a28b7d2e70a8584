"""``Model``: the ``MLmodel`` YAML file at the root of every model directory (MLflow 3.18 layout)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import uuid
from typing import Any, Optional

import yaml

from .errors import ModelFormatError
from .signature import ModelSignature

MLMODEL_FILE = "MLmodel"
INPUT_EXAMPLE_FILE = "input_example.json"
SERVING_INPUT_FILE = "serving_input_example.json"


class Model:
    """What a model directory is: its flavors, signature, input example info and metadata.

    Keys servelm does not know are kept and written back, so a directory saved by MLflow round-trips.
    """

    def __init__(
        self,
        flavors: Optional[dict[str, dict[str, Any]]] = None,
        signature: Optional[ModelSignature] = None,
        saved_input_example_info: Optional[dict[str, Any]] = None,
        metadata: Optional[dict[str, Any]] = None,
        model_uuid: Optional[str] = None,
        utc_time_created: Optional[str] = None,
        model_size_bytes: Optional[int] = None,
        is_signature_from_type_hint: bool = False,
        **extra: Any,
    ):
        self.flavors: dict[str, dict[str, Any]] = flavors or {}
        self.signature = signature
        self.saved_input_example_info = saved_input_example_info
        self.metadata = metadata
        self.model_uuid = model_uuid or uuid.uuid4().hex
        self.utc_time_created = utc_time_created or str(_dt.datetime.now(_dt.UTC).replace(tzinfo=None))
        self.model_size_bytes = model_size_bytes
        self.is_signature_from_type_hint = is_signature_from_type_hint
        self.extra = extra

    def add_flavor(self, name: str, **params: Any) -> Model:
        """Add (or replace) a flavor block."""
        self.flavors[name] = params
        return self

    def to_dict(self) -> dict[str, Any]:
        """The MLmodel content as a plain dict (signature as MLflow's JSON strings)."""
        from . import __version__

        data: dict[str, Any] = {
            "flavors": self.flavors,
            "is_signature_from_type_hint": self.is_signature_from_type_hint,
            "model_id": None,
            "model_size_bytes": self.model_size_bytes,
            "model_uuid": self.model_uuid,
            "prompts": None,
            "servelm_version": __version__,
            "type_hint_from_example": False,
            "utc_time_created": self.utc_time_created,
        }
        if self.metadata:
            data["metadata"] = self.metadata
        if self.saved_input_example_info:
            data["saved_input_example_info"] = self.saved_input_example_info
        if self.signature is not None:
            data["signature"] = self.signature.to_dict()
        data.update(self.extra)
        return dict(sorted(data.items()))

    def save(self, path: str) -> None:
        """Write the ``MLmodel`` file: into ``path`` when it is a directory, else to ``path`` itself (MLflow's
        ``Model.save(os.path.join(model_dir, "MLmodel"))``)."""
        file = os.path.join(path, MLMODEL_FILE) if os.path.isdir(path) else path
        with open(file, "w") as f:
            yaml.safe_dump(self.to_dict(), f, default_flow_style=False, sort_keys=False)

    @classmethod
    def load(cls, path: str) -> Model:
        """Read a model directory's ``MLmodel`` (``path`` is the directory or the file itself)."""
        file = path if os.path.basename(path) == MLMODEL_FILE else os.path.join(path, MLMODEL_FILE)
        if not os.path.isfile(file):
            raise ModelFormatError(f"{file} not found: not a model directory (no MLmodel file)")
        try:
            with open(file) as f:
                data = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ModelFormatError(f"{file} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("flavors"), dict):
            raise ModelFormatError(f"{file} has no 'flavors' mapping")
        signature = data.pop("signature", None)
        data.pop("servelm_version", None)
        return cls(signature=ModelSignature.from_dict(signature) if signature else None, **data)

    def flavor(self, name: str) -> dict[str, Any]:
        """The named flavor block, or a clear error naming the flavors the model has."""
        if name not in self.flavors:
            raise ModelFormatError(f"the model has no {name!r} flavor; it has: {', '.join(self.flavors) or 'none'}")
        return self.flavors[name]

    def load_input_example(self, path: str) -> Any:
        """The saved input example (parsed JSON; a DataFrame / numpy arrays for MLflow's ``dataframe`` /
        ``ndarray`` examples), or None when the model has none."""
        info = self.saved_input_example_info
        if not info:
            return None
        with open(os.path.join(path, info["artifact_path"])) as f:
            example = json.load(f)
        kind = info.get("type")
        if kind == "dataframe" and isinstance(example, dict) and "data" in example:  # MLflow's split orient
            try:
                import pandas as pd
            except ImportError:
                return example
            return pd.DataFrame(example["data"], columns=example.get("columns"))
        if kind == "ndarray" and isinstance(example, dict) and "inputs" in example:  # TF-serving form
            import numpy as np

            inputs = example["inputs"]
            return {k: np.asarray(v) for k, v in inputs.items()} if isinstance(inputs, dict) else np.asarray(inputs)
        return example

    def pyfunc_config(self) -> dict[str, Any]:
        """A copy of the python_function block's saved ``config`` (model_config at save time), or {}."""
        return dict(self.flavors.get("python_function", {}).get("config") or {})

    @property
    def task(self) -> Optional[str]:
        """The model's task (``agent/v2/chat``, ``llm/v1/chat``...), from metadata."""
        return (self.metadata or {}).get("task")
