"""What a pyfunc model receives, as MLflow's pyfunc hands it over.

MLflow converts the input before a model sees it, and models written for MLflow rely on that:

- a model whose signature has columns (inferred from a dict / records / DataFrame / list example, or
  declared with ``ColSpec``) receives a pandas DataFrame: a dict becomes one row (or columns, when its
  values are lists of numbers), a list of records one row each, a list of scalars one column; the
  columns are checked against their types (ints widen to doubles, nothing else is coerced);
- a model whose ``predict`` has a type hint on its input receives that type: a DataFrame becomes a list
  (``list[str]``: the first column's values; ``list[dict]`` / ``list[SomePydanticModel]``: the rows),
  dicts become the pydantic model of the hint;
- a model with a tensor signature receives numpy arrays (``signature.enforce_schema``);
- a model without a signature, and every agent, receives the input as it is.

``input_converter`` decides once, at load, which of these applies; the call itself then costs nothing
for models that need no conversion (agents, the server's hot path).
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Callable
from typing import Any, Optional

from ..errors import ModelFormatError, SchemaEnforcementError
from ..signature import AnyType, Array, ColSpec, Map, Object, Scalar, Schema, enforce_value

log = logging.getLogger("servelm.pyfunc")
PANDAS_HINT = "this model takes a pandas DataFrame (its signature has columns, as in MLflow): pip install pandas"


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise ModelFormatError(PANDAS_HINT) from None
    return pd


def is_dataframe(data: Any) -> bool:
    return type(data).__name__ == "DataFrame" and hasattr(data, "columns")


# ------------------------------------------------------------------------------------------- columns
def to_dataframe(data: Any, schema: Optional[Schema]) -> Any:
    """``data`` as a DataFrame, by MLflow's rules (``mlflow.models.utils._enforce_schema``)."""
    pd = _pandas()
    if is_dataframe(data):
        return data
    if isinstance(data, pd.Series):
        return pd.DataFrame(data)
    if isinstance(data, dict):
        nested = schema is not None and any(
            isinstance(s, ColSpec) and isinstance(s.dtype, (Array, Object)) for s in schema.specs
        )
        if nested or all(
            _is_scalar(v) or (isinstance(v, list) and all(isinstance(i, str) for i in v)) for v in data.values()
        ):
            return pd.DataFrame([data])
        try:
            return pd.DataFrame({k: (v.tolist() if getattr(v, "ndim", 0) > 1 else v) for k, v in data.items()})
        except ValueError as exc:
            raise SchemaEnforcementError(
                f"the model has a column-based signature and the input cannot be a DataFrame: {exc}"
            ) from None
    if isinstance(data, (list, tuple)) or type(data).__name__ == "ndarray":
        return pd.DataFrame(list(data) if isinstance(data, tuple) else data)
    if _is_scalar(data):
        return pd.DataFrame([data])
    raise SchemaEnforcementError(
        f"the model has a column-based signature: expected a DataFrame, a dict or a list, got {type(data).__name__}"
    )


def _is_scalar(value: Any) -> bool:
    return (
        value is None
        or isinstance(value, (str, bytes, int, float, bool))
        or (hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0)
    )


#: each scalar type's numpy dtype and the dtype pandas holds it in (MLflow's ``DataType``)
SCALAR_DTYPES = {
    "boolean": ("bool", "bool"),
    "integer": ("int32", "int32"),
    "long": ("int64", "int64"),
    "float": ("float32", "float32"),
    "double": ("float64", "float64"),
    "string": ("str", "object"),
    "binary": ("bytes", "object"),
    "datetime": ("datetime64[ns]", "datetime64[ns]"),
}


def enforce_dataframe(frame: Any, schema: Schema) -> Any:
    """Check a DataFrame's columns against a column schema, as MLflow's ``_enforce_schema`` does: required
    columns present, each column's type right or safely converted (``_enforce_scalar_column``). Named
    columns come in the schema's order and columns it does not name are dropped (a model reading
    ``model_input.values`` gets its columns where it expects them, whatever order a client's records or a
    CSV's index column had). The frame itself when nothing changed."""
    specs = [s for s in schema.specs if isinstance(s, ColSpec)]
    named = [s for s in specs if s.name]
    if named:
        missing = [s.name for s in named if s.required and s.name not in frame.columns]
        if missing:
            raise SchemaEnforcementError(f"missing required column(s) {missing}; the input has {list(frame.columns)}")
        columns = [(s, s.name) for s in named if s.name in frame.columns]
    else:
        if len(frame.columns) < len(specs):
            raise SchemaEnforcementError(
                f"the signature declares {len(specs)} input column(s); the input has {len(frame.columns)}"
            )
        columns = list(zip(specs, frame.columns))
    converted = {column: _enforce_column(frame[column], spec, str(column)) for spec, column in columns}
    if named:
        extra = [c for c in frame.columns if c not in converted]
        if extra:
            log.warning("the input has columns the signature does not name, ignored as MLflow does: %s", extra)
    if all(new is None for new in converted.values()) and list(frame.columns) == list(converted):
        return frame
    pd = _pandas()
    return pd.DataFrame({c: frame[c] if new is None else new for c, new in converted.items()}, index=frame.index)


def _enforce_column(series: Any, spec: ColSpec, name: str) -> Any:
    """None when the column already conforms; the converted column when a safe conversion was needed."""
    dtype = spec.dtype
    if isinstance(dtype, AnyType):
        return None
    if isinstance(dtype, Scalar):
        out = _enforce_scalar_column(series, dtype.name, name)
        return None if out is series else out
    if isinstance(dtype, (Array, Object, Map)):
        return _check_values(series, dtype, name)
    return None


def _enforce_scalar_column(series: Any, want: str, name: str) -> Any:
    """MLflow's allowed conversions (``_enforce_mlflow_datatype``), and nothing more: object -> string,
    ints and floats upcast within their kind, ints of up to 6 bytes -> double, int64 0/1 columns -> float,
    datetimes of any precision -> datetime64[ns], object -> datetime where numpy parses it. The series
    itself when it conforms; anything else is refused."""
    import numpy as np

    pd = _pandas()
    if series.dtype == object and want not in ("binary", "string"):
        series = series.infer_objects()
    if want == "string" and (series.dtype == object or isinstance(series.dtype, pd.StringDtype)):
        return series
    if want == "binary" and isinstance(series.dtype, pd.StringDtype):
        return series
    numpy_name, pandas_name = SCALAR_DTYPES[want]
    numpy_type = np.dtype(numpy_name)
    if series.dtype == np.dtype(pandas_name) or series.dtype == numpy_type:
        return series
    if want == "binary" and series.dtype.kind == "S":
        return series
    if want == "datetime" and (series.dtype.kind == "M" or series.dtype == object):
        try:
            return series.astype(numpy_type)
        except (TypeError, ValueError) as exc:
            raise SchemaEnforcementError(f"column '{name}': cannot convert {series.dtype} to datetime: {exc}") from None
    if want == "boolean" and series.dtype == object:
        return series  # None stays None, not False
    kind = series.dtype.kind
    size = getattr(series.dtype, "itemsize", 0)
    if kind == numpy_type.kind:
        upcast = size <= numpy_type.itemsize
    elif kind == "u" and numpy_type.kind == "i":
        upcast = size < numpy_type.itemsize
    else:
        upcast = kind in "iu" and numpy_type == np.float64 and size <= 6
    if upcast or (series.dtype == np.int64 and numpy_type.kind == "f" and series.isin([0, 1]).all()):
        return series.astype(numpy_type)
    raise SchemaEnforcementError(
        f"column '{name}': expected {want}; values of dtype {series.dtype} cannot be converted to {numpy_type} safely"
    )


def _check_values(series: Any, dtype: Any, name: str) -> Any:
    """Check each value of an object column; None when none changed."""
    changed = False
    values = []
    for i, value in enumerate(series.tolist()):
        if value is None or (isinstance(value, float) and value != value):
            values.append(value)
            continue
        if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
            value = value.tolist()
        checked = enforce_value(value, dtype, f"{name}[{i}]")
        changed = changed or checked is not value
        values.append(checked)
    if not changed:
        return None
    pd = _pandas()
    return pd.Series(values, index=series.index, name=series.name, dtype=object)


# ------------------------------------------------------------------------------------------- type hints
def input_hint(python_model: Any) -> Any:
    """The type hint on the input parameter of the model's predict (None when there is none). servelm's
    PythonModel evaluates it when the class is defined (``_input_type_hint``); other objects (MLflow's
    PythonModel) are read now."""
    from servelm.agents.python_model import input_type_hint

    if "_input_type_hint" in vars(python_model) or hasattr(type(python_model), "_input_type_hint"):
        return python_model._input_type_hint
    return input_type_hint(getattr(type(python_model), "predict", None))


def _is_pydantic(hint: Any) -> bool:
    try:
        from pydantic import BaseModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(hint, type) and issubclass(hint, BaseModel)


def hint_converter(hint: Any) -> Optional[Callable[[Any], Any]]:
    """A function converting input to ``hint`` and validating it, as MLflow does for type-hinted models
    (strictly: a str is not a list of one, an int is not a str), or None when the hint needs neither."""
    origin = typing.get_origin(hint)
    if origin is list:
        args = typing.get_args(hint)
        element: Any = args[0] if args else Any
        rows = element is dict or typing.get_origin(element) is dict or _is_pydantic(element)
        validate = _validator(hint)

        def to_list(data: Any) -> Any:
            if is_dataframe(data):
                if rows:
                    data = data.iloc[:, 0].tolist() if list(data.columns) == [0] else data.to_dict(orient="records")
                else:
                    data = data.iloc[:, 0].tolist()
                data = [_plain(v) for v in data]
            elif hasattr(data, "tolist") and not isinstance(data, (str, bytes)):
                data = data.tolist()
            if not isinstance(data, list):  # a bare string is not a list of one (nor of its characters)
                raise SchemaEnforcementError(
                    f"the model's input type hint is {hint}: expected a list, got {type(data).__name__}"
                )
            return validate(data)

        return to_list
    if _is_pydantic(hint):
        validate = _validator(hint)

        def to_model(data: Any) -> Any:
            if is_dataframe(data):
                if len(data) != 1:
                    raise SchemaEnforcementError(f"{hint.__name__} takes one record; the input has {len(data)} rows")
                data = {k: _plain(v) for k, v in data.to_dict(orient="records")[0].items()}
            return validate(data)

        return to_model
    if isinstance(hint, type) and hint.__name__ == "DataFrame" and hint.__module__.startswith("pandas"):
        return lambda data: to_dataframe(data, None)
    return None


def _validator(hint: Any) -> Callable[[Any], Any]:
    """``data`` validated against the type hint (pydantic, strict: no str <-> number coercion), pydantic
    models built from dicts; a SchemaEnforcementError naming the bad elements otherwise."""
    from pydantic import TypeAdapter, ValidationError

    adapter: Any = TypeAdapter(hint)

    def validate(data: Any) -> Any:
        try:
            return adapter.validate_python(data, strict=True)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors()[:5]
            )
            raise SchemaEnforcementError(f"the input does not match the model's type hint {hint}: {problems}") from None

    return validate


def _plain(value: Any) -> Any:
    """A numpy scalar / array as a Python value (DataFrame cells)."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()
    return value


# ------------------------------------------------------------------------------------------- choice
def input_converter(schema: Optional[Schema], python_model: Any, type_hinted: bool) -> Optional[Callable[[Any], Any]]:
    """The conversion the model's input needs (None: pass it as it is). Agents are not asked here."""
    hint = input_hint(python_model) if python_model is not None else None
    if hint is not None and hint is not Any:
        return hint_converter(hint)
    if type_hinted or schema is None or schema.is_tensor() or not schema.specs:
        return None
    _pandas()  # the model needs pandas: say so at load
    return lambda data: enforce_dataframe(to_dataframe(data, schema), schema)
