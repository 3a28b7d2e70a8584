"""``infer_signature`` (MLflow's ``mlflow.models.infer_signature``) and the schema of any example value:
dicts, records, lists, scalars, pandas DataFrames and Series, numpy arrays and dicts of them."""

from __future__ import annotations

from typing import Any, Optional

from .signature import (
    AnyType,
    Array,
    ColSpec,
    DataType,
    ModelSignature,
    Scalar,
    Schema,
    TensorSpec,
    data_type_of_value,
    params_schema_from_dict,
    schema_from_example,
)

_KIND_TYPES = {"b": "boolean", "i": "long", "u": "long", "f": "double", "M": "datetime", "U": "string", "S": "binary"}


def _is_frame(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and hasattr(value, "columns")


def _is_series(value: Any) -> bool:
    return type(value).__name__ == "Series" and hasattr(value, "dtype") and hasattr(value, "name")


def _is_array(value: Any) -> bool:
    return type(value).__name__ == "ndarray" and hasattr(value, "dtype")


def column_type(series: Any) -> DataType:
    """The signature type of a pandas column (object columns: the type of their values)."""
    kind = series.dtype.kind
    if kind == "f" and str(series.dtype) == "float32":
        return Scalar("float")
    if kind == "i" and str(series.dtype) in ("int32", "int16", "int8"):
        return Scalar("integer")
    if kind in _KIND_TYPES:
        return Scalar(_KIND_TYPES[kind])
    if str(series.dtype).startswith("string"):
        return Scalar("string")
    types = {data_type_of_value(_plain(v)) for v in series.tolist() if v is not None and not (isinstance(v, float) and v != v)}
    return types.pop() if len(types) == 1 else AnyType()


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") and not isinstance(value, (str, bytes)) else value


def schema_of(value: Any) -> Optional[Schema]:
    """The Schema an example value implies (None for None)."""
    if value is None:
        return None
    if _is_frame(value):
        names = list(value.columns)
        named = not all(isinstance(n, int) for n in names)
        return Schema(tuple(ColSpec(column_type(value[n]), str(n) if named else None, required=not bool(value[n].isna().any())) for n in names))
    if _is_series(value):
        return Schema((ColSpec(column_type(value), str(value.name) if value.name is not None else None),))
    if _is_array(value):
        return Schema((TensorSpec(value.dtype.name, (-1, *value.shape[1:])),))
    if isinstance(value, dict) and value and all(_is_array(v) for v in value.values()):
        return Schema(tuple(TensorSpec(v.dtype.name, (-1, *v.shape[1:]), str(k)) for k, v in value.items()))
    return schema_from_example(_plain(value) if hasattr(value, "dtype") else value)


def infer_signature(model_input: Any = None, model_output: Any = None, params: Optional[dict[str, Any]] = None) -> ModelSignature:
    """A ModelSignature from example input / output (and params with their defaults), as MLflow infers it."""
    return ModelSignature(schema_of(model_input), schema_of(model_output), params_schema_from_dict(params) if params else None)


__all__ = ["Array", "infer_signature", "schema_of"]
