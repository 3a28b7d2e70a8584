"""/invocations JSON and CSV as MLflow's scoring server hands them to a plain pyfunc model.

MLflow does not give such a model the JSON as it is: ``inputs`` and ``instances`` become numpy arrays (of the
signature's dtypes where it has them: ``{"inputs": [[1, 2], [3, 4]]}`` is an ``int64`` array of shape
(2, 2), ``instances`` records become a dict of column arrays), and ``dataframe_split`` / ``dataframe_records``
/ CSV become a DataFrame whose columns are cast to the signature's types (a ``float`` column to float32, a
``long`` column given 2.5 to 2, ISO strings in a ``datetime`` column to datetime64[ns], base64 in a
``binary`` column to bytes). These are ports of ``mlflow.utils.proto_json_utils``' rules; what does not fit
is a 400 naming the input, before the model runs.

Agents and servelm's LLM flavors are not served through here: they take their JSON as it is
(``scoring_input.parse_invocation`` decides).
"""

from __future__ import annotations

from typing import Any, Optional

from servelm.flavors.pyfunc.input_conversion import SCALAR_DTYPES
from servelm.flavors.signature import AnyType, Array, ColSpec, Map, Object, Scalar, Schema, TensorSpec, enforce_value

from .errors import APIError
from .scoring_input import from_base64

#: the numpy dtype of each scalar type, and the dtype a DataFrame column of it is cast to (MLflow's DataType)
_NUMPY = {name: numpy for name, (numpy, _) in SCALAR_DTYPES.items()}
_PANDAS = {name: pandas for name, (_, pandas) in SCALAR_DTYPES.items()}


def _bad(key: str, message: str) -> APIError:
    return APIError(400, f"{key}: {message}", param=key, code="invalid_value")


def _named(schema: Optional[Schema]) -> dict[str, Any]:
    """The schema's specs by name ({} for an unnamed schema or none)."""
    if schema is None or not any(getattr(s, "name", None) for s in schema.specs):
        return {}
    return {s.name: s for s in schema.specs if s.name}


def convert_value(data: Any, spec: Any, key: str) -> Any:
    """One JSON value as the spec's type (MLflow's ``convert_data_type``): numpy for tensors and scalar
    columns, checked values for arrays, objects and maps; a numpy array of whatever it holds without a spec."""
    import numpy as np

    try:
        if spec is None:
            return np.array(data)
        if isinstance(spec, TensorSpec):
            return np.array(data, dtype=np.dtype(spec.dtype))
        dtype = spec.dtype
        if isinstance(dtype, Scalar):
            numpy_type = np.dtype(_NUMPY[dtype.name])
            return (
                np.array(data, numpy_type) if isinstance(data, (list, np.ndarray)) else np.array([data], numpy_type)[0]
            )
        if isinstance(dtype, Array):
            return np.array(enforce_value(data, dtype, key))
        if isinstance(dtype, (Object, Map)):
            return enforce_value(data, dtype, key)
        if isinstance(dtype, AnyType):
            return data
    except (TypeError, ValueError, OverflowError) as exc:
        raise _bad(key, str(exc).splitlines()[0]) from None
    raise _bad(key, f"cannot convert to {spec}")


def inputs_as_model_input(value: Any, schema: Optional[Schema]) -> Any:
    """``{"inputs": value}`` as MLflow reads it (``_cast_schema_type``): a list or scalar becomes an array;
    a dict a dict of arrays, one per column / named tensor."""
    import numpy as np

    named = _named(schema)
    if schema is not None:
        if len(named) == 1 and isinstance(value, list) and not any(isinstance(x, dict) for x in value):
            value = {next(iter(named)): value}  # one named column: the list is its values
        elif not named and not (isinstance(value, list) or np.isscalar(value)):
            raise _bad("inputs", "the model's signature is one unnamed input: send a list (an array) or a value")
    first = schema.specs[0] if schema is not None and schema.specs else None
    if isinstance(value, dict):
        return {k: convert_value(v, named.get(k), f"inputs.{k}") for k, v in value.items()}
    if isinstance(value, list) and all(isinstance(x, dict) for x in value):  # records (an empty list stays a list)
        return [{k: convert_value(v, named.get(k), f"inputs.{k}") for k, v in row.items()} for row in value]
    return convert_value(value, first, "inputs")


def instances_as_model_input(value: Any, schema: Optional[Schema]) -> Any:
    """``{"instances": value}`` as MLflow reads it (``parse_instances_data``): records become a dict of
    column arrays (all of one length); anything else as ``inputs``."""
    import numpy as np

    named = _named(schema)
    if isinstance(value, list) and value and isinstance(value[0], dict):
        columns: dict[str, list[Any]] = {}
        for row in value:
            if not isinstance(row, dict):
                raise _bad("instances", "mixes records and other values")
            for k, v in row.items():
                columns.setdefault(k, []).append(convert_value(v, named.get(k), f"instances.{k}"))
        try:
            data: Any = {k: np.array(v) for k, v in columns.items()}
        except ValueError as exc:
            raise _bad("instances", str(exc).splitlines()[0]) from None
    else:
        data = inputs_as_model_input(value, schema)
    if isinstance(data, dict):
        lengths = {k: len(v) for k, v in data.items() if isinstance(v, (list, np.ndarray)) and np.ndim(v) > 0}
        if named:
            checked = {
                k
                for k, s in named.items()
                if getattr(s, "required", True) and not isinstance(getattr(s, "dtype", None), Array)
            }
            lengths = {k: n for k, n in lengths.items() if k in checked}
        if len(set(lengths.values())) > 1:
            raise _bad("instances", f"every input needs the same number of values; got {lengths}")
    return data


def frame_as_model_input(value: Any, orient: str, schema: Optional[Schema]) -> Any:
    """``dataframe_split`` / ``dataframe_records`` as a DataFrame cast to the signature
    (``dataframe_from_parsed_json``)."""
    import pandas as pd

    key = f"dataframe_{orient}"
    if orient == "records":
        if not isinstance(value, list):
            raise _bad(key, f"a list of records is needed; got {type(value).__name__}")
        try:
            frame = pd.DataFrame(data=value)
        except Exception as exc:  # pandas raises several types for malformed frames
            raise _bad(key, f"not a DataFrame in records orientation: {exc}") from None
    else:
        if not isinstance(value, dict) or "data" not in value or set(value) - {"columns", "data", "index"}:
            raise _bad(key, "needs {'columns': [...], 'data': [[...], ...]} (and optionally 'index')")
        try:
            frame = pd.DataFrame(index=value.get("index"), columns=value.get("columns"), data=value["data"])
        except Exception as exc:  # pandas raises several types for malformed frames
            raise _bad(key, f"not a DataFrame in split orientation: {exc}") from None
    return cast_frame(frame, schema, key) if schema is not None else frame


def cast_frame(frame: Any, schema: Schema, key: str) -> Any:
    """A DataFrame's columns cast to the signature's types (``cast_df_types_according_to_schema``)."""
    import pandas as pd

    named = _named(schema)
    if named:
        pairs = [(name, spec) for name, spec in named.items()]
    elif schema.is_tensor() and len(schema.specs) == 1:
        pairs = [(column, schema.specs[0]) for column in frame.columns]
    else:
        pairs = list(zip(frame.columns, schema.specs))
    for column, spec in pairs:
        if column not in frame.columns or frame.empty:
            continue
        series = frame[column]
        dtype = spec.dtype if isinstance(spec, ColSpec) else None
        try:
            if isinstance(dtype, Scalar) and dtype.name == "binary":
                frame[column] = series.map(lambda v: from_base64(v, key) if isinstance(v, str) else v)
            elif isinstance(spec, TensorSpec):
                if not isinstance(series.iloc[0], list):
                    frame[column] = series.astype(spec.dtype)
            elif isinstance(dtype, (Array, Object, Map)):
                frame[column] = series.map(lambda v, d=dtype, where=f"{key}.{column}": enforce_value(v, d, where))
            elif isinstance(dtype, Scalar) and dtype.name == "datetime":
                parsed = pd.to_datetime(series)
                if getattr(parsed.dt, "unit", "ns") != "ns":
                    parsed = parsed.dt.as_unit("ns")
                frame[column] = parsed
            elif isinstance(dtype, Scalar):
                target = _PANDAS[dtype.name]
                if target in ("object", "str") and isinstance(series.dtype, pd.StringDtype):
                    continue
                frame[column] = series.astype(target)
        except APIError:
            raise
        except Exception as exc:  # pandas' casts raise TypeError, ValueError, OverflowError...
            raise _bad(key, f"column {column!r} cannot be cast to {_describe(spec)}: {exc}") from None
    return frame


def csv_dtypes(schema: Optional[Schema]) -> Optional[dict[str, str]]:
    """The dtype of each named scalar column, for reading a CSV body (``parse_csv_input``)."""
    named = _named(schema)
    if not named or schema is None or schema.is_tensor():
        return None
    dtypes = {
        n: _PANDAS[s.dtype.name] for n, s in named.items() if isinstance(s.dtype, Scalar) and s.dtype.name != "datetime"
    }
    return dtypes or None


def _describe(spec: Any) -> str:
    dtype = getattr(spec, "dtype", None)
    return getattr(dtype, "name", None) or str(dtype)
