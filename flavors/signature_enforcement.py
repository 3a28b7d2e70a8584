"""Signature enforcement: model input checked against its schema at predict time, with safe conversions only
(an int may become a double; a string never becomes a number). Enforcement returns the input object itself when
it already conforms (no copies, MLflow #7948)."""

from __future__ import annotations

import datetime as _dt
import logging
from typing import Any, Optional

from .errors import SchemaEnforcementError
from .signature import AnyType, Array, ColSpec, DataType, Map, ParamSchema, Property, Scalar, Schema, TensorSpec

_log = logging.getLogger("servelm.signature")


def _fail(path: str, expected: str, value: Any) -> SchemaEnforcementError:
    where = f"'{path}'" if path else "the input"
    return SchemaEnforcementError(f"{where}: expected {expected}, got {type(value).__name__} {value!r:.60}")


def enforce_value(value: Any, dtype: DataType, path: str) -> Any:
    """Check ``value`` against ``dtype``; return it (converted only where safe and necessary)."""
    if isinstance(dtype, AnyType):
        return value
    if isinstance(dtype, Scalar):
        return _enforce_scalar(value, dtype.name, path)
    if isinstance(dtype, Array):
        if not isinstance(value, (list, tuple)):
            raise _fail(path, "an array", value)
        out: Any = value
        for i, item in enumerate(value):
            checked = enforce_value(item, dtype.items, f"{path}[{i}]")
            if checked is not item:
                if out is value:
                    out = list(value)
                out[i] = checked
        return out
    if isinstance(dtype, Map):
        if not isinstance(value, dict):
            raise _fail(path, "a map (object with string keys)", value)
        out_map = value
        for k, item in value.items():
            checked = enforce_value(item, dtype.values, f"{path}.{k}" if path else str(k))
            if checked is not item:
                if out_map is value:
                    out_map = dict(value)
                out_map[k] = checked
        return out_map
    if not isinstance(value, dict):
        raise _fail(path, "an object", value)
    return enforce_fields(value, dtype.properties, path)


def enforce_fields(record: dict[str, Any], fields: tuple[Property, ...], path: str = "") -> dict[str, Any]:
    """Check a record's named fields (required present, types right); unknown keys pass through."""
    out = record
    for prop in fields:
        sub = f"{path}.{prop.name}" if path else prop.name
        if prop.name not in record or record[prop.name] is None:
            if prop.required:
                raise SchemaEnforcementError(f"'{sub}' is required ({_describe(prop.dtype)}) but missing")
            continue
        item = record[prop.name]
        checked = enforce_value(item, prop.dtype, sub)
        if checked is not item:
            if out is record:
                out = dict(record)
            out[prop.name] = checked
    return out


def _describe(dtype: DataType) -> str:
    if isinstance(dtype, Scalar):
        return dtype.name
    return type(dtype).__name__.lower()


def _enforce_scalar(value: Any, name: str, path: str) -> Any:
    if name == "string":
        if isinstance(value, str):
            return value
    elif name in ("long", "integer"):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif name in ("double", "float"):
        if isinstance(value, float):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)  # safe widening
    elif name == "boolean":
        if isinstance(value, bool):
            return value
    elif name == "binary":
        if isinstance(value, (bytes, bytearray)):
            return value
    elif name == "datetime":
        if isinstance(value, _dt.datetime):
            return value
        if isinstance(value, str):
            try:
                return _dt.datetime.fromisoformat(value)
            except ValueError:
                pass
    raise _fail(path, name, value)


def enforce_schema(data: Any, schema: Schema) -> Any:
    """Check model input against the signature's input schema; return it, converted only if needed.

    Named columns accept one record (a dict), a list of records, or a pandas DataFrame; one unnamed
    column accepts a list of values or a single value. Tensor specs check numpy dtype and rank.
    """
    if schema.is_tensor():
        return _enforce_tensor(data, schema)
    specs = [s for s in schema.specs if isinstance(s, ColSpec)]
    named = any(s.name for s in specs)
    if _is_dataframe(data):
        return _enforce_dataframe(data, specs) if named else data
    if named:
        props = tuple(Property(s.name or "", s.dtype, s.required) for s in specs)
        if isinstance(data, dict):
            return enforce_fields(data, props)
        if isinstance(data, list):
            out = data
            for i, record in enumerate(data):
                if not isinstance(record, dict):
                    raise _fail(f"[{i}]", "a record (object with named fields)", record)
                checked = enforce_fields(record, props, f"[{i}]")
                if checked is not record:
                    if out is data:
                        out = list(data)
                    out[i] = checked
            return out
        raise _fail("", "a record or a list of records", data)
    if len(specs) == 1:
        if isinstance(data, list):
            return enforce_value(data, Array(specs[0].dtype), "")
        return enforce_value(data, specs[0].dtype, "")
    return data


def _is_dataframe(data: Any) -> bool:
    return type(data).__name__ == "DataFrame" and hasattr(data, "columns")


def _enforce_dataframe(frame: Any, specs: list[ColSpec]) -> Any:
    missing = [s.name for s in specs if s.required and s.name not in frame.columns]
    if missing:
        raise SchemaEnforcementError(f"missing required column(s) {missing}; the frame has {list(frame.columns)}")
    return frame


def _enforce_tensor(data: Any, schema: Schema) -> Any:
    """One tensor (an array, or JSON lists cast to the spec's dtype), or named tensors as a dict of them."""
    specs = [s for s in schema.specs if isinstance(s, TensorSpec)]
    if isinstance(data, dict) and any(s.name for s in specs):
        missing = [s.name for s in specs if s.name not in data]
        if missing:
            raise SchemaEnforcementError(f"missing tensor input(s) {missing}; the input has {sorted(data)}")
        out = dict(data)
        for spec in specs:
            out[spec.name] = _enforce_one_tensor(data[spec.name], spec, f"tensor '{spec.name}'")
        return out
    if len(specs) > 1:
        raise SchemaEnforcementError(
            f"the model takes {len(specs)} named tensors {[s.name for s in specs]}: send a dict of them"
        )
    return _enforce_one_tensor(data, specs[0], "tensor input")


def _enforce_one_tensor(data: Any, spec: TensorSpec, what: str) -> Any:
    import numpy as np

    want_dtype = np.dtype(spec.dtype)
    if type(data).__name__ == "DataFrame":
        data = data.to_numpy()
    if isinstance(data, np.ndarray):
        array = data
    else:  # JSON lists and Python values: cast to the spec's dtype, as MLflow's scoring server does
        try:
            array = np.asarray(data, dtype=want_dtype)
        except (TypeError, ValueError) as exc:
            raise SchemaEnforcementError(f"{what}: cannot be read as {spec.dtype}: {exc}") from None
    if len(spec.shape) != array.ndim:
        raise SchemaEnforcementError(
            f"{what}: expected rank {len(spec.shape)} shape {list(spec.shape)}, got shape {list(array.shape)}"
        )
    for want, got in zip(spec.shape, array.shape):
        if want != -1 and want != got:
            raise SchemaEnforcementError(f"{what}: expected shape {list(spec.shape)}, got {list(array.shape)}")
    if array.dtype != want_dtype:
        if not np.can_cast(array.dtype, want_dtype, casting="safe"):
            raise SchemaEnforcementError(f"{what}: expected dtype {spec.dtype}, got {array.dtype} (not a safe cast)")
        array = array.astype(want_dtype)
    return array


def enforce_params(params: Optional[dict[str, Any]], schema: Optional[ParamSchema]) -> Optional[dict[str, Any]]:
    """Params as MLflow hands them to a model (``_enforce_params_schema``): defaults filled in for missing
    ones, the given ones' types checked; params the schema does not name are ignored with a warning; and a
    model whose signature declares no params gets none (``{}``, with a warning, when some were sent)."""
    if schema is None:
        if not params:
            return params
        _log.warning(
            "params can only be given to a model whose signature declares them (a params schema); this model "
            "declares none, so these are ignored: %s",
            list(params) if isinstance(params, dict) else params,
        )
        return {}
    given = params or {}
    if not isinstance(given, dict):
        raise SchemaEnforcementError(f"params must be a dictionary, got {type(given).__name__}")
    known = {p.name: p for p in schema.params}
    unknown = [k for k in given if k not in known]
    if unknown:
        _log.warning(
            "params %s are not in the model's params schema and are ignored; it accepts %s", unknown, sorted(known)
        )
    out = {}
    for name, spec in known.items():
        if name in given and given[name] is not None:
            dtype: DataType = Array(Scalar(spec.dtype)) if spec.shape else Scalar(spec.dtype)
            out[name] = enforce_value(given[name], dtype, f"params.{name}")
        else:
            out[name] = spec.default
    return out
