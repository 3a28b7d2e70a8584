"""MLflow's /invocations request formats, parsed into model input.

A JSON body with ``messages``, ``prompt`` or ``input`` goes to predict as it is, and the reply is not
wrapped. Otherwise ``dataframe_split`` / ``dataframe_records`` / ``instances`` / ``inputs`` (+ ``params``)
and the reply is ``{"predictions": ...}``. ``"stream": true`` streams predict_stream's output.

Also accepted, as MLflow's scoring server does (and did in 1.x): ``text/csv`` bodies (a DataFrame, needs
pandas); a bare ``{"columns": [...], "data": [...]}`` (split) or a bare list of records (objects);
``application/json; format=pandas-split`` / ``format=pandas-records``; TF-serving ``inputs`` as columns
(``{"inputs": {"a": [1, 2], "b": [3, 4]}}``) and ``{"b64": "..."}`` values as bytes. With the model's input
schema at hand, values are cast to it: tensors to their numpy dtype, base64 strings in binary columns to bytes.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import Any, Optional

from .errors import APIError

_RAW_KEYS = ("messages", "prompt", "input")
_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_PANDAS_FORMATS = {"pandas-split": "dataframe_split", "pandas-records": "dataframe_records"}


@dataclass
class Invocation:
    """One parsed /invocations request."""

    data: Any
    params: Optional[dict[str, Any]]
    stream: bool
    raw: bool  # True: reply unwrapped (agent/chat bodies)


def parse_invocation(
    body: Any, schema: Any = None, pandas_format: Optional[str] = None, mlflow_input: bool = False, hinted: bool = False
) -> Invocation:
    """Parse a JSON scoring request body; 400 with the accepted formats when it fits none.

    ``schema`` is the model's input Schema (or None); ``pandas_format`` the ``format=`` parameter of the
    content type (``pandas-split`` / ``pandas-records``), which says the whole body is that frame.
    ``mlflow_input``: the model is a plain pyfunc model, which takes its input as MLflow's scoring server
    converts it (numpy arrays, DataFrames cast to the signature: ``scoring_casts``); ``hinted``: its signature
    comes from its type hints, so it takes ``inputs`` as they are (and nothing else, as in MLflow).
    """
    if pandas_format is not None:
        key = _PANDAS_FORMATS.get(pandas_format)
        if key is None:
            raise APIError(
                415,
                f"content type format {pandas_format!r} is not supported; use one of {', '.join(_PANDAS_FORMATS)}",
                code="unsupported_media_type",
            )
        body = {key: body}
    elif isinstance(body, list) and body and all(isinstance(r, dict) for r in body):
        body = {"dataframe_records": body}  # a bare list of records (MLflow 1.x's default orient)
    elif isinstance(body, dict) and "data" in body and "columns" in body and set(body) <= {"columns", "data", "index"}:
        body = {"dataframe_split": body}  # a bare split frame
    if not isinstance(body, dict):
        raise APIError(
            400,
            f"/invocations needs a JSON object with one of {', '.join(_FORMATS + _RAW_KEYS)}",
            code="invalid_format",
        )
    stream = bool(body.get("stream", False))
    if any(k in body for k in _RAW_KEYS):
        return Invocation(body, None, stream, raw=True)
    present = [k for k in _FORMATS if k in body]
    if len(present) != 1:
        problem = "several of" if present else "none of"
        raise APIError(
            400,
            f"/invocations body has {problem} the input keys {', '.join(_FORMATS)}; send exactly one",
            code="invalid_format",
        )
    params = body.get("params")
    if params is not None and not isinstance(params, dict) and not mlflow_input:
        # (a plain pyfunc model is given them as they are: params it has no schema for are ignored, as MLflow)
        raise APIError(400, "params must be a JSON object", param="params")
    key = present[0]
    value = body[key]
    if mlflow_input:
        return Invocation(_mlflow_model_input(key, _decode_b64(value), schema, hinted), params, stream, raw=False)
    if key == "dataframe_split":
        if not isinstance(value, dict) or "data" not in value:
            raise APIError(
                400, "dataframe_split needs {'columns': [...], 'data': [[...], ...]}", param="dataframe_split"
            )
        columns = value.get("columns")
        rows = value["data"]
        data: Any = [dict(zip(columns, row)) for row in rows] if columns else rows
        data = _maybe_dataframe(_decode_binary_columns(data, schema), columns)
    elif key == "dataframe_records":
        if not isinstance(value, list):
            raise APIError(400, "dataframe_records needs a list of records", param="dataframe_records")
        data = _maybe_dataframe(_decode_binary_columns(value, schema), None)
    else:
        data = _cast_to_schema(_decode_b64(value), schema, key)
    return Invocation(data, params, stream, raw=False)


def _mlflow_model_input(key: str, value: Any, schema: Any, hinted: bool) -> Any:
    """The body's input as MLflow's scoring server hands it to a plain pyfunc model."""
    from . import scoring_casts

    if hinted:
        if key != "inputs":
            raise APIError(
                400,
                f"this model's signature comes from its type hints: send its input as 'inputs', not {key!r}",
                param=key,
                code="invalid_format",
            )
        return value
    if key == "inputs":
        return scoring_casts.inputs_as_model_input(value, schema)
    if key == "instances":
        return scoring_casts.instances_as_model_input(value, schema)
    return scoring_casts.frame_as_model_input(value, key[len("dataframe_") :], schema)


def parse_csv(body: bytes, schema: Any = None, mlflow_input: bool = False) -> Invocation:
    """A ``text/csv`` body as a DataFrame (MLflow's ``parse_csv_input``); columns cast to the schema's types."""
    try:
        import pandas as pd
    except ImportError:
        raise APIError(
            415,
            "text/csv bodies need pandas on the server (pip install pandas); send application/json",
            code="unsupported_media_type",
        ) from None
    try:
        if mlflow_input:
            from .scoring_casts import csv_dtypes

            frame = pd.read_csv(io.BytesIO(body), dtype=csv_dtypes(schema))
            return Invocation(frame, None, False, raw=False)
        frame = pd.read_csv(io.BytesIO(body))
    except Exception as exc:
        raise APIError(400, f"the CSV body cannot be parsed: {exc}", code="invalid_format") from None
    for spec in getattr(schema, "specs", ()) or ():
        name = getattr(spec, "name", None)
        kind = getattr(getattr(spec, "dtype", None), "name", None)
        if name in frame.columns and kind == "binary":
            frame[name] = frame[name].map(lambda v: from_base64(v) if isinstance(v, str) else v)
    return Invocation(frame, None, False, raw=False)


def from_base64(text: str, key: Optional[str] = None) -> bytes:
    """A base64 string's bytes; a 400 (naming ``key``, the input it came in, when given) when it is not base64:
    a client's error, never a 500."""
    try:
        return base64.b64decode(text)
    except (binascii.Error, ValueError) as exc:
        message = f"a binary value is not valid base64: {exc}"
        raise APIError(400, f"{key}: {message}" if key else message, param=key, code="invalid_value") from None


def _decode_b64(value: Any) -> Any:
    """TF serving's ``{"b64": "..."}`` values as bytes, anywhere in ``value``."""
    if isinstance(value, dict):
        if len(value) == 1 and "b64" in value and isinstance(value["b64"], str):
            return from_base64(value["b64"])
        return {k: _decode_b64(v) for k, v in value.items()}
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return [_decode_b64(v) for v in value]
    return value


def _binary_columns(schema: Any) -> list[str]:
    return [
        s.name
        for s in getattr(schema, "specs", ()) or ()
        if getattr(s, "name", None) and getattr(getattr(s, "dtype", None), "name", None) == "binary"
    ]


def _decode_binary_columns(records: Any, schema: Any) -> Any:
    """Base64 strings in the schema's binary columns as bytes (JSON cannot carry bytes)."""
    names = _binary_columns(schema)
    if not names or not isinstance(records, list):
        return records
    out = []
    for record in records:
        if isinstance(record, dict) and any(isinstance(record.get(n), str) for n in names):
            record = {**record, **{n: from_base64(record[n]) for n in names if isinstance(record.get(n), str)}}
        out.append(record)
    return out


def _cast_to_schema(value: Any, schema: Any, key: str) -> Any:
    """``instances`` / ``inputs`` as numpy arrays of the schema's dtypes when the schema has tensors."""
    specs = getattr(schema, "specs", None)
    if not specs or not schema.is_tensor():
        return _decode_binary_columns(value, schema) if isinstance(value, list) else value
    import numpy as np

    try:
        if len(specs) == 1 and not isinstance(value, dict):
            return np.asarray(value, dtype=np.dtype(specs[0].dtype))
        if (
            isinstance(value, list) and value and all(isinstance(r, dict) for r in value)
        ):  # instances as rows of named tensors
            value = {name: [r.get(name) for r in value] for name in value[0]}
        if isinstance(value, dict):
            dtypes = {s.name: np.dtype(s.dtype) for s in specs}
            return {k: np.asarray(v, dtype=dtypes[k]) if k in dtypes else v for k, v in value.items()}
    except (TypeError, ValueError) as exc:
        raise APIError(400, f"{key} cannot be cast to the model's tensor types: {exc}", param=key) from None
    return value


def _maybe_dataframe(records: Any, columns: Optional[list[str]]) -> Any:
    """A pandas DataFrame when pandas is installed (MLflow's behaviour); plain records otherwise."""
    try:
        import pandas as pd
    except ImportError:
        return records
    return (
        pd.DataFrame.from_records(records, columns=columns)
        if records and isinstance(records[0], dict)
        else pd.DataFrame(records, columns=columns)
    )
