"""Model signatures in MLflow's JSON format: column specs, tensor specs and a params schema.

Signatures are inferred from type hints or input examples (``signature_inference.py``), written into
``MLmodel``, and enforced at predict time (``signature_enforcement.py``); both modules' names are importable
from here too.
"""

from __future__ import annotations

import json
from builtins import type as type_
from dataclasses import dataclass
from typing import Any, Optional, Union

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

    items: DataType

    def to_dict(self) -> dict[str, Any]:
        return {"type": "array", "items": self.items.to_dict()}


@dataclass(frozen=True)
class Property:
    """One named field of an Object."""

    name: str
    dtype: DataType
    required: bool = True


@dataclass(frozen=True)
class Object:
    """A dict with known fields (``properties``)."""

    properties: tuple[Property, ...]

    def to_dict(self) -> dict[str, Any]:
        props = {
            p.name: {**p.dtype.to_dict(), "required": p.required} for p in sorted(self.properties, key=lambda p: p.name)
        }
        return {"type": "object", "properties": props}


@dataclass(frozen=True)
class Map:
    """A dict with string keys and values of type ``values``."""

    values: DataType

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
        return Object(
            tuple(Property(n, data_type_from_dict(p), p.get("required", True)) for n, p in spec["properties"].items())
        )
    if kind == "map":
        return Map(data_type_from_dict(spec["values"]))
    if kind == "any":
        return AnyType()
    if kind in SCALAR_TYPES:
        return Scalar(kind)
    raise ValueError(f"unknown signature type {kind!r}")


# ------------------------------------------------------------------------------------------ specs
def _as_data_type(value: Any) -> DataType:
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


def _unknown_type(name: str) -> DataType:
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

    def __init__(
        self,
        type: Any = None,
        name: Optional[str] = None,
        optional: Optional[bool] = None,
        required: bool = True,
        *,
        dtype: Any = None,
    ):
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
    def from_json(cls, text: str) -> Schema:
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
        return {
            "name": self.name,
            "type": self.dtype,
            "default": self.default,
            "shape": list(self.shape) if self.shape else None,
        }


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
    def from_json(cls, text: str) -> ParamSchema:
        return cls(
            tuple(
                ParamSpec(p["name"], p["type"], p.get("default"), tuple(p["shape"]) if p.get("shape") else None)
                for p in json.loads(text)
            )
        )


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
    def from_dict(cls, data: dict[str, Optional[str]]) -> ModelSignature:
        inputs, outputs, params = data.get("inputs"), data.get("outputs"), data.get("params")
        return cls(
            inputs=Schema.from_json(inputs) if inputs else None,
            outputs=Schema.from_json(outputs) if outputs else None,
            params=ParamSchema.from_json(params) if params else None,
        )


# Inference and enforcement live in modules of their own; their names stay importable from here.
from .signature_enforcement import enforce_fields, enforce_params, enforce_schema, enforce_value  # noqa: E402
from .signature_inference import (  # noqa: E402
    data_type_from_hint,
    data_type_of_value,
    infer_signature,
    object_from_pydantic,
    params_schema_from_dict,
    schema_from_example,
    schema_from_pydantic_fields,
    schema_from_type_hint,
    schema_of,
)

__all__ = [
    "AnyType",
    "Array",
    "ColSpec",
    "DataType",
    "Map",
    "ModelSignature",
    "Object",
    "ParamSchema",
    "ParamSpec",
    "Property",
    "Scalar",
    "Schema",
    "TensorSpec",
    "data_type_from_dict",
    "data_type_from_hint",
    "data_type_of_value",
    "enforce_fields",
    "enforce_params",
    "enforce_schema",
    "enforce_value",
    "infer_signature",
    "object_from_pydantic",
    "params_schema_from_dict",
    "schema_from_example",
    "schema_from_pydantic_fields",
    "schema_from_type_hint",
    "schema_of",
]
