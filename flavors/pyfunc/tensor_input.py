"""Tensor input of a pyfunc model with a tensor signature, checked as MLflow checks it (``_enforce_tensor_schema``).

MLflow hands such a model numpy arrays and nothing else: an array whose dtype is the spec's exactly and whose
shape fits it (-1 matches any size), a dict of such arrays for named tensors, or a DataFrame whose columns
are reshaped and cast to the spec (one column of scalars or of lists per tensor). A Python list is refused,
and no dtype is cast: ``float64`` for a ``float32`` spec is an error, as in MLflow. JSON request bodies are
cast to the spec's dtypes by the scoring server before they get here (``serving/scoring_input.py``).
"""

from __future__ import annotations

from typing import Any

from ..errors import SchemaEnforcementError
from ..signature import Schema, TensorSpec
from .input_conversion import is_dataframe


def enforce_tensor_input(data: Any, schema: Schema) -> Any:
    """``data`` checked against a tensor schema; a DataFrame becomes the arrays the specs describe."""
    import numpy as np

    specs = [s for s in schema.specs if isinstance(s, TensorSpec)]
    if any(s.name for s in specs):
        if is_dataframe(data) or isinstance(data, dict):
            missing = [s.name for s in specs if s.name not in data]
            if missing:
                raise SchemaEnforcementError(f"missing tensor input(s) {missing}; the input has {list(data)}")
        if isinstance(data, dict):
            out = {}
            for spec in specs:
                value = data[spec.name]
                if not isinstance(value, np.ndarray):
                    raise SchemaEnforcementError(
                        f"tensor '{spec.name}': the model's signature has named tensors, so it takes a dict of numpy "
                        f"arrays; got {type(value).__name__}"
                    )
                out[spec.name] = _check_array(value, spec, f"tensor '{spec.name}'")
            return out
        if is_dataframe(data):
            return {s.name: _column_as_tensor(data[s.name], s, f"column '{s.name}'") for s in specs}
        raise SchemaEnforcementError(
            f"the model's signature has named tensors: it takes a dict of numpy arrays or a DataFrame, "
            f"got {type(data).__name__}"
        )
    spec = specs[0]
    if is_dataframe(data):
        if data.empty:
            raise SchemaEnforcementError("the input DataFrame is empty")
        if len(data.columns) == 1:
            return _column_as_tensor(data[data.columns[0]], spec, "the input column")
        if tuple(spec.shape) != (-1, len(data.columns)):
            raise SchemaEnforcementError(
                f"a DataFrame of {len(data.columns)} columns fits a tensor of shape (-1, {len(data.columns)}); "
                f"the signature's is {tuple(spec.shape)}"
            )
        return _check_array(data.to_numpy(), spec, "the input")
    if isinstance(data, np.ndarray):
        return _check_array(data, spec, "the input")
    raise SchemaEnforcementError(
        f"the model's signature is a tensor: it takes a numpy array (or a DataFrame), got {type(data).__name__}"
    )


def _check_array(array: Any, spec: TensorSpec, what: str) -> Any:
    """The array itself when its shape and dtype fit ``spec`` (MLflow's ``_enforce_tensor_spec``)."""
    import numpy as np

    shape = tuple(spec.shape)
    want = np.dtype(spec.dtype)
    if len(shape) == 1 and shape[0] == -1 and want == np.dtype("O"):
        return array  # Tensor('object', (-1,)) takes anything
    if len(shape) > 1 and -1 in shape[1:] and array.ndim == 1 and array.dtype == np.dtype("O"):
        return array  # a ragged array for a spec with variable inner dimensions
    if len(shape) != array.ndim or any(w not in (-1, g) for w, g in zip(shape, array.shape)):
        raise SchemaEnforcementError(f"{what}: shape {array.shape} does not match the signature's {shape}")
    got = array.dtype
    if got.kind in "US":
        got = np.dtype(got.kind)  # strings of any length match a str / bytes spec
    if got != want:
        raise SchemaEnforcementError(f"{what}: dtype {array.dtype} does not match the signature's {want}")
    return array


def _column_as_tensor(series: Any, spec: TensorSpec, what: str) -> Any:
    """A DataFrame column as the spec's tensor (MLflow's ``_reshape_and_cast_pandas_column_values``)."""
    import numpy as np

    shape = tuple(spec.shape)
    if shape[0] != -1 or -1 in shape[1:]:
        raise SchemaEnforcementError(
            f"{what}: a DataFrame column fits a tensor whose first dimension is variable and the others fixed; "
            f"the signature's shape is {shape}"
        )
    first = series.iloc[0]
    try:
        if np.isscalar(first):
            if shape not in ((-1,), (-1, 1)):
                raise SchemaEnforcementError(
                    f"{what} holds scalars, which fit a tensor of shape (-1,) or (-1, 1); the signature's is {shape}"
                )
            return _check_array(np.array(series, dtype=np.dtype(spec.dtype)).reshape(shape), spec, what)
        if isinstance(first, list) and first and np.isscalar(first[0]):
            out = np.vstack(series.tolist()).reshape(shape).astype(np.dtype(spec.dtype))
        elif isinstance(first, np.ndarray):
            out = _check_array(np.vstack(series.tolist()).reshape(shape), spec, what)
        else:
            raise SchemaEnforcementError(f"{what}: a tensor column holds scalars, lists or arrays of scalars")
    except ValueError as exc:
        raise SchemaEnforcementError(f"{what}: cannot be reshaped to {shape} as {spec.dtype}: {exc}") from None
    if len(out) != len(series):
        raise SchemaEnforcementError(f"{what}: its values cannot be reshaped to {shape}")
    return out
