"""MLflow's /invocations request formats, parsed into model input.

A body with ``messages``, ``prompt`` or ``input`` goes to predict as it is, and the reply is not
wrapped. Otherwise ``dataframe_split`` / ``dataframe_records`` / ``instances`` / ``inputs`` (+ ``params``)
and the reply is ``{"predictions": ...}``. ``"stream": true`` streams predict_stream's output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .errors import APIError

_RAW_KEYS = ("messages", "prompt", "input")
_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


@dataclass
class Invocation:
    """One parsed /invocations request."""

    data: Any
    params: Optional[dict[str, Any]]
    stream: bool
    raw: bool  # True: reply unwrapped (agent/chat bodies)


def parse_invocation(body: Any) -> Invocation:
    """Parse a scoring request body; 400 with the accepted formats when it fits none."""
    if not isinstance(body, dict):
        raise APIError(400, f"/invocations needs a JSON object with one of {', '.join(_FORMATS + _RAW_KEYS)}", code="invalid_format")
    stream = bool(body.get("stream", False))
    if any(k in body for k in _RAW_KEYS):
        return Invocation(body, None, stream, raw=True)
    present = [k for k in _FORMATS if k in body]
    if len(present) != 1:
        problem = "several of" if present else "none of"
        raise APIError(400, f"/invocations body has {problem} the input keys {', '.join(_FORMATS)}; send exactly one", code="invalid_format")
    params = body.get("params")
    if params is not None and not isinstance(params, dict):
        raise APIError(400, "params must be a JSON object", param="params")
    key = present[0]
    value = body[key]
    if key == "dataframe_split":
        if not isinstance(value, dict) or "data" not in value:
            raise APIError(400, "dataframe_split needs {'columns': [...], 'data': [[...], ...]}", param="dataframe_split")
        columns = value.get("columns")
        rows = value["data"]
        data: Any = [dict(zip(columns, row)) for row in rows] if columns else rows
        data = _maybe_dataframe(data, columns)
    elif key == "dataframe_records":
        if not isinstance(value, list):
            raise APIError(400, "dataframe_records needs a list of records", param="dataframe_records")
        data = _maybe_dataframe(value, None)
    else:
        data = value
    return Invocation(data, params, stream, raw=False)


def _maybe_dataframe(records: Any, columns: Optional[list[str]]) -> Any:
    """A pandas DataFrame when pandas is installed (MLflow's behaviour); plain records otherwise."""
    try:
        import pandas as pd
    except ImportError:
        return records
    return pd.DataFrame.from_records(records, columns=columns) if records and isinstance(records[0], dict) else pd.DataFrame(records, columns=columns)
