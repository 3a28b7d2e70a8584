"""Signature inference: from type hints, pydantic models and example values (dicts, records, lists, scalars,
pandas DataFrames and Series, numpy arrays and dicts of them), and ``infer_signature`` (MLflow's
``mlflow.models.infer_signature``)."""

from __future__ import annotations

import datetime as _dt
import types
import typing
from typing import Any, Optional, Union

from .signature import (
    AnyType,
    Array,
    ColSpec,
    DataType,
    Map,
    ModelSignature,
    Object,
    ParamSchema,
    ParamSpec,
    Property,
    Scalar,
    Schema,
    TensorSpec,
)

_PY_SCALARS: dict[type, str] = {
    str: "string",
    bool: "boolean",
    int: "long",
    float: "double",
    bytes: "binary",
    _dt.datetime: "datetime",
}


def data_type_from_hint(hint: Any) -> tuple[DataType, bool]:
    """The signature type of a Python type hint, and whether it is required (not Optional)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        required = len(non_none) == len(args)
        if len(non_none) == 1:
            return data_type_from_hint(non_none[0])[0], required
        return AnyType(), required
    if hint is Any or hint is object or hint is None:
        return AnyType(), True
    if origin is typing.Literal:
        return (Scalar("string") if all(isinstance(a, str) for a in args) else AnyType()), True
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple):
        return Array(data_type_from_hint(args[0])[0] if args else AnyType()), True
    if origin is dict or hint is dict:
        return Map(data_type_from_hint(args[1])[0] if len(args) == 2 else AnyType()), True
    if isinstance(hint, type):
        for py_type, name in _PY_SCALARS.items():
            if issubclass(hint, py_type):
                return Scalar(name), True
        if _is_pydantic_model(hint):
            return object_from_pydantic(hint), True
    return AnyType(), True


def _is_pydantic_model(hint: Any) -> bool:
    try:
        from pydantic import BaseModel
    except ImportError:  # pragma: no cover - pydantic is a core dependency
        return False
    return isinstance(hint, type) and issubclass(hint, BaseModel)


def object_from_pydantic(model: Any) -> Object:
    """An Object type with one property per field of a pydantic model; a field is optional when its type is
    (``Optional[X]``), whether or not it has a default, as MLflow records type hints."""
    props = []
    for name, info in model.model_fields.items():
        dtype, required = data_type_from_hint(info.annotation)
        props.append(Property(name, dtype, required))
    return Object(tuple(props))


def schema_from_pydantic_fields(model: Any, exclude: tuple[str, ...] = ()) -> Schema:
    """A Schema with one named column per field of a pydantic model (how agent signatures are built)."""
    cols = []
    for name, info in model.model_fields.items():
        if name in exclude:
            continue
        dtype, required = data_type_from_hint(info.annotation)
        cols.append(ColSpec(dtype, name, required=required and info.is_required()))
    return Schema(tuple(sorted(cols, key=lambda c: c.name or "")))


def schema_from_type_hint(hint: Any) -> Optional[Schema]:
    """A Schema from a predict type hint: ``list[X]`` gives one unnamed column of X, as in MLflow."""
    if hint is None or hint is Any:
        return None
    origin = typing.get_origin(hint)
    if origin is list:
        args = typing.get_args(hint)
        dtype, _ = data_type_from_hint(args[0]) if args else (AnyType(), True)
        return Schema((ColSpec(dtype),))
    dtype, _ = data_type_from_hint(hint)
    return Schema((ColSpec(dtype),))


def data_type_of_value(value: Any) -> DataType:
    """The signature type of an example value."""
    if hasattr(value, "dtype") and getattr(value, "ndim", None) == 0:  # a numpy scalar
        value = value.item()
    if isinstance(value, bool):
        return Scalar("boolean")
    for py_type, name in _PY_SCALARS.items():
        if isinstance(value, py_type):
            return Scalar(name)
    if isinstance(value, list):
        if not value:
            return AnyType()  # nothing to infer from, as in MLflow
        item_types = {data_type_of_value(v) for v in value}
        if len(item_types) > 1:
            raise ValueError(f"a list's values need one type to infer a signature from it; got {value!r:.80}")
        return Array(item_types.pop())
    if isinstance(value, dict):
        return Object(tuple(Property(k, data_type_of_value(v)) for k, v in value.items())) if value else AnyType()
    return AnyType()


def schema_from_example(example: Any) -> Optional[Schema]:
    """A Schema from an input example: a dict gives named columns, a list of scalars one unnamed column."""
    if isinstance(example, dict):
        return Schema(tuple(ColSpec(data_type_of_value(v), k, required=v is not None) for k, v in example.items()))
    if isinstance(example, list) and example and all(isinstance(r, dict) for r in example):
        keys = {k: data_type_of_value(v) for r in example for k, v in r.items()}
        return Schema(tuple(ColSpec(t, k) for k, t in keys.items()))
    if isinstance(example, list) and example:
        item = data_type_of_value(example)
        return Schema((ColSpec(item.items if isinstance(item, Array) else item),))
    if example is not None:
        return Schema((ColSpec(data_type_of_value(example)),))
    return None


def params_schema_from_dict(params: dict[str, Any]) -> ParamSchema:
    """A ParamSchema whose defaults are the given values (types inferred from them)."""
    specs = []
    for name, value in params.items():
        dtype = data_type_of_value(value)
        if isinstance(dtype, Array) and isinstance(dtype.items, Scalar):
            specs.append(ParamSpec(name, dtype.items.name, value, (-1,)))
        else:
            specs.append(ParamSpec(name, dtype.name if isinstance(dtype, Scalar) else "string", value))
    return ParamSchema(tuple(specs))


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
    types = {
        data_type_of_value(_plain(v))
        for v in series.tolist()
        if v is not None and not (isinstance(v, float) and v != v)
    }
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
        return Schema(
            tuple(
                ColSpec(column_type(value[n]), str(n) if named else None, required=not bool(value[n].isna().any()))
                for n in names
            )
        )
    if _is_series(value):
        return Schema((ColSpec(column_type(value), str(value.name) if value.name is not None else None),))
    if _is_array(value):
        return Schema((TensorSpec(value.dtype.name, (-1, *value.shape[1:])),))
    if isinstance(value, dict) and value and all(_is_array(v) for v in value.values()):
        return Schema(tuple(TensorSpec(v.dtype.name, (-1, *v.shape[1:]), str(k)) for k, v in value.items()))
    return schema_from_example(_plain(value) if hasattr(value, "dtype") else value)


def infer_signature(
    model_input: Any = None, model_output: Any = None, params: Optional[dict[str, Any]] = None
) -> ModelSignature:
    """A ModelSignature from example input / output (and params with their defaults), as MLflow infers it."""
    return ModelSignature(
        schema_of(model_input), schema_of(model_output), params_schema_from_dict(params) if params else None
    )
