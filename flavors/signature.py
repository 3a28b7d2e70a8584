"""Model signatures in MLflow's JSON format: column specs, tensor specs and a params schema.

Signatures are inferred from type hints or input examples, written into ``MLmodel``, and enforced at
predict time with safe conversions only (an int may become a double; a string never becomes a number).
Enforcement returns the input object itself when it already conforms (no copies, MLflow #7948).
"""

from __future__ import annotations

import datetime as _dt
import json
import types
from builtins import type as type_
import typing
from dataclasses import dataclass
from typing import Any, Optional, Union

from .errors import SchemaEnforcementError

SCALAR_TYPES = ("string", "long", "integer", "double", "float", "boolean", "binary", "datetime")


# ----------------------------------------------------------------------------------------------- types
@dataclass(frozen=True)
class Scalar:
    """A scalar column type: string, long, double, boolean, binary, datetime (integer/float too)."""

    name: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.name}


@dataclass(frozen=True)
class Array:
    """A list whose elements all have type ``items``."""

    items: "DataType"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "array", "items": self.items.to_dict()}


@dataclass(frozen=True)
class Property:
    """One named field of an Object."""

    name: str
    dtype: "DataType"
    required: bool = True


@dataclass(frozen=True)
class Object:
    """A dict with known fields (``properties``)."""

    properties: tuple[Property, ...]

    def to_dict(self) -> dict[str, Any]:
        props = {p.name: {**p.dtype.to_dict(), "required": p.required} for p in sorted(self.properties, key=lambda p: p.name)}
        return {"type": "object", "properties": props}


@dataclass(frozen=True)
class Map:
    """A dict with string keys and values of type ``values``."""

    values: "DataType"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "map", "values": self.values.to_dict()}


@dataclass(frozen=True)
class AnyType:
    """Any JSON value."""

    def to_dict(self) -> dict[str, Any]:
        return {"type": "any"}


DataType = Union[Scalar, Array, Object, Map, AnyType]


def data_type_from_dict(spec: dict[str, Any]) -> DataType:
    """Parse MLflow's JSON form of a column type."""
    kind = spec.get("type")
    if kind == "array":
        return Array(data_type_from_dict(spec["items"]))
    if kind == "object":
        return Object(tuple(Property(n, data_type_from_dict(p), p.get("required", True)) for n, p in spec["properties"].items()))
    if kind == "map":
        return Map(data_type_from_dict(spec["values"]))
    if kind == "any":
        return AnyType()
    if kind in SCALAR_TYPES:
        return Scalar(kind)
    raise ValueError(f"unknown signature type {kind!r}")


# ------------------------------------------------------------------------------------------ specs
def _as_data_type(value: Any) -> "DataType":
    """A DataType from what MLflow's constructors accept: a type object, a name ("double"), or an enum
    member of ``mlflow.types.DataType`` (its ``name``)."""
    if isinstance(value, (Scalar, Array, Object, Map, AnyType)):
        return value
    if isinstance(value, str):
        return AnyType() if value == "any" else Scalar(value) if value in SCALAR_TYPES else _unknown_type(value)
    name = getattr(value, "name", None)
    if isinstance(name, str):
        return _as_data_type(name)
    to_dict = getattr(value, "to_dict", None)
    if to_dict is not None:  # MLflow's Array / Object / Map
        return data_type_from_dict(to_dict())
    raise ValueError(f"unknown signature type {value!r}")


def _unknown_type(name: str) -> "DataType":
    raise ValueError(f"unknown signature type {name!r}; use one of {', '.join(SCALAR_TYPES)}")


@dataclass(frozen=True, init=False)
class ColSpec:
    """One input/output column: its type, optional name, and whether it is required.

    ``ColSpec("double", "x")``, ``ColSpec(type="string", name="q", required=False)`` (MLflow's form) and
    ``ColSpec(Scalar("double"), "x")`` build the same spec.
    """

    dtype: DataType
    name: Optional[str] = None
    required: bool = True

    def __init__(self, type: Any = None, name: Optional[str] = None, optional: Optional[bool] = None, required: bool = True, *, dtype: Any = None):
        object.__setattr__(self, "dtype", _as_data_type(dtype if dtype is not None else type))
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "required", (not optional) if optional is not None else required)

    @property
    def type(self) -> DataType:
        """The column type (MLflow's attribute name)."""
        return self.dtype

    def to_dict(self) -> dict[str, Any]:
        out = self.dtype.to_dict()
        if self.name is not None:
            out["name"] = self.name
        out["required"] = self.required
        return out


@dataclass(frozen=True, init=False)
class TensorSpec:
    """A tensor input/output: numpy dtype name and shape (-1 for a variable dimension).

    ``TensorSpec(np.dtype("float32"), (-1, 4), "x")`` (MLflow's form) and ``TensorSpec("float32", [-1, 4])`` both work.
    """

    dtype: str
    shape: tuple[int, ...]
    name: Optional[str] = None

    def __init__(self, type: Any = None, shape: Any = (), name: Optional[str] = None, *, dtype: Any = None):
        given = dtype if dtype is not None else type
        kind = getattr(given, "name", None) if not isinstance(given, str) else given
        if kind is None and isinstance(given, type_):  # a numpy scalar type such as np.float32
            kind = given.__name__
        object.__setattr__(self, "dtype", str(kind))
        object.__setattr__(self, "shape", tuple(int(d) for d in shape))
        object.__setattr__(self, "name", name)

    @property
    def type(self) -> Any:
        """The numpy dtype (MLflow's attribute)."""
        import numpy as np

        return np.dtype(self.dtype)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "tensor", "tensor-spec": {"dtype": self.dtype, "shape": list(self.shape)}}
        if self.name is not None:
            out["name"] = self.name
        return out


Spec = Union[ColSpec, TensorSpec]


@dataclass(frozen=True)
class Schema:
    """An ordered list of column or tensor specs."""

    specs: tuple[Spec, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.specs, tuple):  # MLflow's Schema([...]) takes a list
            object.__setattr__(self, "specs", tuple(self.specs))

    @property
    def inputs(self) -> list[Spec]:
        """The specs (MLflow's attribute name)."""
        return list(self.specs)

    def input_names(self) -> list[Optional[str]]:
        return [s.name for s in self.specs]

    def has_input_names(self) -> bool:
        return bool(self.specs) and all(s.name for s in self.specs)

    def is_tensor_spec(self) -> bool:
        return self.is_tensor()

    def to_dict(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.specs]

    def to_json(self) -> str:
        return json.dumps([s.to_dict() for s in self.specs])

    @classmethod
    def from_json(cls, text: str) -> "Schema":
        specs: list[Spec] = []
        for item in json.loads(text):
            if item.get("type") == "tensor":
                ts = item["tensor-spec"]
                specs.append(TensorSpec(ts["dtype"], tuple(ts["shape"]), item.get("name")))
            else:
                specs.append(ColSpec(data_type_from_dict(item), item.get("name"), required=item.get("required", True)))
        return cls(tuple(specs))

    def is_tensor(self) -> bool:
        return bool(self.specs) and isinstance(self.specs[0], TensorSpec)

    def column_names(self) -> list[Optional[str]]:
        return [s.name for s in self.specs]


@dataclass(frozen=True)
class ParamSpec:
    """One inference parameter: name, type, default and optional shape (None for a scalar)."""

    name: str
    dtype: str
    default: Any
    shape: Optional[tuple[int, ...]] = None

    def __post_init__(self) -> None:
        if not isinstance(self.dtype, str):  # an mlflow.types.DataType member
            object.__setattr__(self, "dtype", str(getattr(self.dtype, "name", self.dtype)))
        if self.shape is not None and not isinstance(self.shape, tuple):
            object.__setattr__(self, "shape", tuple(self.shape))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.dtype, "default": self.default, "shape": list(self.shape) if self.shape else None}


@dataclass(frozen=True)
class ParamSchema:
    """The params a model accepts at predict, with their defaults."""

    params: tuple[ParamSpec, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.params, tuple):  # MLflow's ParamSchema([...]) takes a list
            object.__setattr__(self, "params", tuple(self.params))

    def to_json(self) -> str:
        return json.dumps([p.to_dict() for p in self.params])

    @classmethod
    def from_json(cls, text: str) -> "ParamSchema":
        return cls(tuple(ParamSpec(p["name"], p["type"], p.get("default"), tuple(p["shape"]) if p.get("shape") else None) for p in json.loads(text)))


@dataclass
class ModelSignature:
    """Inputs, outputs and params of a model, as stored in ``MLmodel``."""

    inputs: Optional[Schema] = None
    outputs: Optional[Schema] = None
    params: Optional[ParamSchema] = None

    def to_dict(self) -> dict[str, Optional[str]]:
        return {
            "inputs": self.inputs.to_json() if self.inputs else None,
            "outputs": self.outputs.to_json() if self.outputs else None,
            "params": self.params.to_json() if self.params else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Optional[str]]) -> "ModelSignature":
        return cls(
            inputs=Schema.from_json(data["inputs"]) if data.get("inputs") else None,
            outputs=Schema.from_json(data["outputs"]) if data.get("outputs") else None,
            params=ParamSchema.from_json(data["params"]) if data.get("params") else None,
        )


# -------------------------------------------------------------------------------------- inference
_PY_SCALARS: dict[type, str] = {str: "string", bool: "boolean", int: "long", float: "double", bytes: "binary", _dt.datetime: "datetime"}


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
    """An Object type with one property per field of a pydantic model."""
    props = []
    for name, info in model.model_fields.items():
        dtype, required = data_type_from_hint(info.annotation)
        props.append(Property(name, dtype, required and info.is_required()))
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
        item_types = {data_type_of_value(v) for v in value}
        return Array(item_types.pop() if len(item_types) == 1 else AnyType())
    if isinstance(value, dict):
        return Object(tuple(Property(k, data_type_of_value(v)) for k, v in value.items())) if value else Map(AnyType())
    return AnyType()


def schema_from_example(example: Any) -> Optional[Schema]:
    """A Schema from an input example: a dict gives named columns, a list of scalars one unnamed column."""
    if isinstance(example, dict):
        return Schema(tuple(ColSpec(data_type_of_value(v), k) for k, v in example.items()))
    if isinstance(example, list) and example and all(isinstance(r, dict) for r in example):
        keys = {k: data_type_of_value(v) for r in example for k, v in r.items()}
        return Schema(tuple(ColSpec(t, k) for k, t in keys.items()))
    if isinstance(example, list) and example:
        return Schema((ColSpec(data_type_of_value(example[0])),))
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


# -------------------------------------------------------------------------------------- enforcement
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
        out = value
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
        raise SchemaEnforcementError(f"the model takes {len(specs)} named tensors {[s.name for s in specs]}: send a dict of them")
    return _enforce_one_tensor(data, specs[0], "tensor input")


def _enforce_one_tensor(data: Any, spec: "TensorSpec", what: str) -> Any:
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
        raise SchemaEnforcementError(f"{what}: expected rank {len(spec.shape)} shape {list(spec.shape)}, got shape {list(array.shape)}")
    for want, got in zip(spec.shape, array.shape):
        if want != -1 and want != got:
            raise SchemaEnforcementError(f"{what}: expected shape {list(spec.shape)}, got {list(array.shape)}")
    if array.dtype != want_dtype:
        if not np.can_cast(array.dtype, want_dtype, casting="safe"):
            raise SchemaEnforcementError(f"{what}: expected dtype {spec.dtype}, got {array.dtype} (not a safe cast)")
        array = array.astype(want_dtype)
    return array


def enforce_params(params: Optional[dict[str, Any]], schema: Optional[ParamSchema]) -> Optional[dict[str, Any]]:
    """Fill defaults for missing params and check the given ones' types; unknown params are refused."""
    if schema is None:
        return params
    given = params or {}
    known = {p.name: p for p in schema.params}
    unknown = [k for k in given if k not in known]
    if unknown:
        raise SchemaEnforcementError(f"unknown param(s) {unknown}; the model accepts {sorted(known)}")
    out = {}
    for name, spec in known.items():
        if name in given and given[name] is not None:
            dtype: DataType = Array(Scalar(spec.dtype)) if spec.shape else Scalar(spec.dtype)
            out[name] = enforce_value(given[name], dtype, f"params.{name}")
        else:
            out[name] = spec.default
    return out
