"""``spark_udf``: a model directory as a Spark pandas UDF, as ``mlflow.pyfunc.spark_udf``.

An iterator UDF: each Python worker loads the model once (a module-level cache, kept while Spark reuses the
worker across tasks) and scores one Arrow batch per call. Inputs are the UDF's columns, named by the input
signature in order (or one struct column: a DataFrame with its fields); a model whose signature is one
unnamed column (``predict(self, model_input: list[str])``) gets the column as a list. Results: a primitive
type, an array of one, or a struct of those (``result_type``, default from the output signature).

LLM directories (the transformers and onnx flavors) score a column of prompts (strings) or message lists
(``array<struct<role, content>>``), or a struct column of chat requests (``messages`` plus per-row fields like
``max_tokens``): each Arrow batch is one predict call, generated as one batch on the flavor's batcher. The
result is the reply's text (``string``), every choice's text (``array<string>``), or a struct of
``content``, ``finish_reason``, ``prompt_tokens``, ``completion_tokens``, ``total_tokens``, ``id``, ``model``.

Set ``SERVELM_SPARK_LOG`` to a file path and each Python worker appends a line when it loads a model
(``load``, pid, model, seconds) and when it scores a batch (``predict``, pid, rows, seconds).
"""

# No ``from __future__ import annotations``: pyspark reads the UDF's type hints as objects.

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any, Optional, Union

log = logging.getLogger("servelm.spark")

#: the flavors served as LLMs, and the extra each needs on the executors
LLM_FLAVORS = {"transformers": "servelm[transformers]", "onnx": "servelm[onnx]"}
LLM_TASKS = ("llm/v1/chat", "text-generation")
#: what a struct result of an LLM may hold
LLM_FIELDS = ("content", "finish_reason", "prompt_tokens", "completion_tokens", "total_tokens", "id", "model")
_MODELS: dict[tuple[str, str], Any] = {}  # (model path, model_config as JSON) -> loaded model, per Python worker


# ---------------------------------------------------------------------------------- the driver
def spark_udf(
    spark: Any,
    model_uri: str,
    result_type: Any = None,
    env_manager: Optional[str] = None,
    params: Optional[dict[str, Any]] = None,
    extra_env: Optional[dict[str, str]] = None,
    model_config: Optional[dict[str, Any]] = None,
) -> Any:
    """A Spark UDF scoring the model directory ``model_uri``: ``df.withColumn("out", udf("a", "b"))``, or
    ``udf()`` for the input signature's columns.

    ``result_type``: a pyspark DataType or a DDL string (``"string"``, ``"array<double>"``,
    ``"struct<a: int, b: string>"``); by default the output signature's type (``string`` for LLMs, ``double``
    when there is none, as MLflow). ``params`` go to every predict call; ``model_config`` to the load.
    The executors' own Python runs the model (``env_manager`` ``"local"``, the only one); ``extra_env`` is
    set in the workers before the model loads. On a cluster (not ``local[...]``) the directory is shipped to
    the executors with ``SparkContext.addFile``.
    """
    try:
        import pandas  # noqa: F401
        from pyspark.sql.functions import pandas_udf
        from pyspark.sql.types import DataType
    except ImportError as exc:
        raise ImportError(
            f"spark_udf needs pyspark, pyarrow and pandas: pip install 'servelm[spark]' ({exc})"
        ) from None
    from ..errors import ModelFormatError
    from ..model import Model

    if env_manager not in (None, "local"):
        raise ValueError(
            f"env_manager={env_manager!r}: servelm's spark_udf runs the model in the executors' own Python "
            "(env_manager='local'); install servelm and the model's requirements there"
        )
    path = os.path.abspath(os.fspath(model_uri))
    if not os.path.isfile(os.path.join(path, "MLmodel")):
        raise ModelFormatError(f"{path} is not a model directory (no MLmodel file)")
    meta = Model.load(path)
    kind = model_kind(meta)
    rtype = _data_type(spark, result_type) if result_type is not None else default_result_type(meta, kind)
    if not isinstance(rtype, DataType):
        raise TypeError(f"result_type must be a pyspark DataType or a DDL string, got {type(result_type).__name__}")
    check_result_type(rtype, kind)
    inputs = meta.signature.inputs if meta.signature is not None and kind == "pyfunc" else None
    names = [s.name for s in inputs.specs] if inputs is not None and not inputs.is_tensor() else []
    spec = {
        "path": path,
        "kind": kind,
        "params": params,
        "model_config": model_config or {},
        "extra_env": extra_env or {},
        "result_type": rtype,
        "input_names": names if all(names) else [],
        "required": [s.name for s in inputs.specs if getattr(s, "required", True)]
        if inputs is not None and names and all(names)
        else [],
        "one_list_column": bool(
            inputs is not None and not inputs.is_tensor() and len(inputs.specs) == 1 and not names[0]
        ),
        "shipped": _ship(spark, path),
        "extra": _extra_hint(meta, path, kind),
    }
    scorer = pandas_udf(_udf_function(spec), returnType=rtype)
    default_columns = spec["input_names"]

    def udf(*columns: Any) -> Any:
        if not columns:
            if not default_columns:
                raise TypeError(
                    "this model's signature names no input columns: pass the columns to score, e.g. udf('text')"
                )
            columns = tuple(default_columns)
        return scorer(*columns)

    udf.__doc__ = f"Scores {path} ({kind}) into {rtype.simpleString()}."
    for attribute in (
        "func",
        "returnType",
        "evalType",
        "deterministic",
        "asNondeterministic",
    ):  # spark.udf.register takes it as a UDF
        setattr(udf, attribute, getattr(scorer, attribute))
    return udf


def model_kind(meta: Any) -> str:
    """``llm-chat`` / ``llm-text`` for the LLM flavors' directories, ``pyfunc`` for anything else."""
    for flavor in LLM_FLAVORS:
        if flavor in meta.flavors:
            return "llm-chat" if meta.task == "llm/v1/chat" else "llm-text"
    return "pyfunc"


def default_result_type(meta: Any, kind: str) -> Any:
    """The output signature as a Spark type: one column of a scalar (or an array of scalars) as itself,
    named scalar columns as a struct; ``string`` for LLMs; ``double`` otherwise (as MLflow)."""
    from pyspark.sql.types import ArrayType, DoubleType, StringType, StructField, StructType

    from ..signature import Array, ColSpec, Scalar

    if kind != "pyfunc":
        return StringType()
    outputs = meta.signature.outputs if meta.signature is not None else None
    specs = [s for s in (outputs.specs if outputs is not None else ()) if isinstance(s, ColSpec)]
    if len(specs) == 1 and not specs[0].name:
        dtype = specs[0].dtype
        if isinstance(dtype, Scalar):
            return _spark_scalar(dtype.name)
        if isinstance(dtype, Array) and isinstance(dtype.items, Scalar):
            return ArrayType(_spark_scalar(dtype.items.name))
    if specs and all(s.name for s in specs) and all(isinstance(s.dtype, Scalar) for s in specs):
        return StructType([StructField(s.name, _spark_scalar(s.dtype.name)) for s in specs])  # type: ignore[union-attr]
    return DoubleType()


def check_result_type(rtype: Any, kind: str) -> None:
    """MLflow's rule: a primitive type, an array of one, or a struct of those; for LLMs, a string, an
    array of strings, or a struct of ``LLM_FIELDS``."""
    from pyspark.sql.types import ArrayType, StringType, StructType

    def primitive(t: Any) -> bool:
        return not isinstance(t, (ArrayType, StructType)) and type(t).__name__ not in (
            "MapType",
            "NullType",
            "VariantType",
        )

    if kind != "pyfunc":
        if isinstance(rtype, StructType):
            unknown = [f.name for f in rtype.fields if f.name not in LLM_FIELDS]
            if unknown:
                raise ValueError(
                    f"result_type fields {unknown} are not what an LLM returns; choose from {', '.join(LLM_FIELDS)}"
                )
            return
        if isinstance(rtype, StringType) or (
            isinstance(rtype, ArrayType) and isinstance(rtype.elementType, StringType)
        ):
            return
        raise ValueError(
            f"an LLM scores into string (the reply), array<string> (each choice) or a struct of {', '.join(LLM_FIELDS)}; "
            f"got {rtype.simpleString()}"
        )
    ok = primitive(rtype) or (isinstance(rtype, ArrayType) and primitive(rtype.elementType))
    if isinstance(rtype, StructType):
        ok = all(
            primitive(f.dataType) or (isinstance(f.dataType, ArrayType) and primitive(f.dataType.elementType))
            for f in rtype.fields
        )
    if not ok:
        raise ValueError(
            f"result_type {rtype.simpleString()}: use a primitive type, an array of one, or a struct of those"
        )


def _spark_scalar(name: str) -> Any:
    from pyspark.sql import types as T

    return {
        "string": T.StringType(),
        "long": T.LongType(),
        "integer": T.IntegerType(),
        "double": T.DoubleType(),
        "float": T.FloatType(),
        "boolean": T.BooleanType(),
        "binary": T.BinaryType(),
        "datetime": T.TimestampType(),
    }[name]


def _data_type(spark: Any, result_type: Any) -> Any:
    if not isinstance(result_type, str):
        return result_type
    from pyspark.sql.types import _parse_datatype_string

    try:
        return _parse_datatype_string(result_type)
    except Exception as exc:
        raise ValueError(f"result_type {result_type!r} is not a Spark type: {exc}") from None


def _ship(spark: Any, path: str) -> Optional[str]:
    """Off local mode, send the model directory to the executors (its name there); None where they share this filesystem."""
    master = spark.sparkContext.master
    if master.startswith("local"):
        return None
    spark.sparkContext.addFile(path, recursive=True)
    return os.path.basename(path)


def _extra_hint(meta: Any, path: str, kind: str) -> str:
    """What to install on the executors for this model."""
    for flavor, extra in LLM_FLAVORS.items():
        if flavor in meta.flavors:
            return f"pip install '{extra}'"
    requirements = os.path.join(path, "requirements.txt")
    return (
        f"pip install -r {requirements} (the model's requirements)"
        if os.path.isfile(requirements)
        else "install the model's requirements"
    )


def _udf_function(spec: dict[str, Any]) -> Any:
    """The function pyspark pickles to the workers. It refers to nothing of servelm's by name, so a worker
    without servelm unpickles it and fails with a message that says so."""
    import pandas as pd

    def servelm_udf(batches):
        try:
            from servelm.flavors.pyfunc.spark import score_batches
        except ImportError as exc:
            import sys as _sys

            raise RuntimeError(
                f"servelm is not installed in this Spark executor's Python ({_sys.executable}): {exc}. "
                f"Install it there (pip install servelm), and for this model: {spec['extra']}"
            ) from None
        return score_batches(spec, batches)

    from pyspark.sql.types import StructType

    out = pd.DataFrame if isinstance(spec["result_type"], StructType) else pd.Series
    servelm_udf.__annotations__ = {
        "batches": Iterator[tuple[Union[pd.Series, pd.DataFrame], ...]],
        "return": Iterator[out],  # type: ignore[valid-type]  # pandas_udf reads the annotation at run time
    }
    return servelm_udf


# ---------------------------------------------------------------------------------- the workers
def loaded_model(spec: dict[str, Any]) -> Any:
    """The model of ``spec``, loaded once per Python worker."""
    path = spec["path"]
    if spec.get("shipped"):
        from pyspark import SparkFiles

        path = SparkFiles.get(spec["shipped"])
    key = (path, json.dumps(spec["model_config"], sort_keys=True, default=str))
    model = _MODELS.get(key)
    if model is None:
        os.environ.update(spec.get("extra_env") or {})
        start = time.perf_counter()
        model = _MODELS[key] = _load(path, spec)
        seconds = time.perf_counter() - start
        log.info("loaded %s in %.2f s (worker %d)", path, seconds, os.getpid())
        _record("load", path, seconds)
    return model


def _record(event: str, what: Any, seconds: float) -> None:
    """A line in ``SERVELM_SPARK_LOG``'s file, when it is set (appends of one short line do not interleave)."""
    target = os.environ.get("SERVELM_SPARK_LOG")
    if target:
        with open(target, "a") as f:
            f.write(f"{event}\t{os.getpid()}\t{what}\t{seconds:.3f}\n")


def _load(path: str, spec: dict[str, Any]) -> Any:
    from . import load_model

    try:
        return load_model(path, spec["model_config"] or None)
    except Exception as exc:
        missing = _missing_module(exc)
        if missing is None:
            raise
        raise RuntimeError(
            f"this Spark executor's Python ({sys.executable}) lacks the module {missing!r}, which the model {path} needs: "
            f"{spec['extra']} there"
        ) from exc


def _missing_module(exc: BaseException) -> Optional[str]:
    seen: Optional[BaseException] = exc
    while seen is not None:
        if isinstance(seen, ModuleNotFoundError):
            return seen.name
        seen = seen.__cause__ or seen.__context__
    return None


def score_batches(spec: dict[str, Any], batches: Iterator[Any]) -> Iterator[Any]:
    """Each Arrow batch's results (the body of the UDF on a worker)."""
    import pandas as pd

    model = loaded_model(spec)
    for batch in batches:
        columns = (batch,) if isinstance(batch, (pd.Series, pd.DataFrame)) else tuple(batch)
        rows = len(columns[0])
        if rows == 0:
            continue
        start = time.perf_counter()
        if spec["kind"] == "pyfunc":
            result = _pyfunc_result(model.predict(_pyfunc_input(spec, columns), spec["params"]), spec["result_type"])
        else:
            result = _llm_result(model, spec, columns)
        if len(result) != rows:
            raise ValueError(f"the model returned {len(result)} results for a batch of {rows} rows")
        _record("predict", rows, time.perf_counter() - start)
        yield result


# ---------------------------------------------------------------------------------- pyfunc models
def _pyfunc_input(spec: dict[str, Any], columns: tuple[Any, ...]) -> Any:
    """The batch as predict input: a struct column's DataFrame, or the columns named by the signature
    (by position: "0", "1"... without one); one unnamed signature column as a list."""
    import pandas as pd

    if len(columns) == 1 and isinstance(columns[0], pd.DataFrame):
        frame = columns[0]
    else:
        names = spec["input_names"] or [str(i) for i in range(len(columns))]
        if len(columns) > len(names):
            columns = columns[: len(names)]
        if len(columns) < len(spec["required"]):
            raise ValueError(f"the model needs the columns {spec['required']}; the UDF got {len(columns)}")
        frame = pd.DataFrame({name: column.reset_index(drop=True) for name, column in zip(names, columns)})
    if spec["one_list_column"]:
        return [_plain(v) for v in frame.iloc[:, 0].tolist()]
    return frame


def _pyfunc_result(result: Any, rtype: Any) -> Any:
    """The model's output as the UDF's Series (or DataFrame for a struct result)."""
    import numpy as np
    import pandas as pd
    from pyspark.sql.types import ArrayType, StructType

    if isinstance(rtype, StructType):
        names = [f.name for f in rtype.fields]
        if isinstance(result, pd.DataFrame):
            frame = result
        elif isinstance(result, dict):
            frame = pd.DataFrame(
                {k: list(v) if isinstance(v, (list, tuple, np.ndarray, pd.Series)) else [v] for k, v in result.items()}
            )
        else:
            frame = pd.DataFrame([_plain(r) for r in result])
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise ValueError(
                f"the model's output has no {missing} for the struct result (it has {list(frame.columns)})"
            )
        return frame[names].reset_index(drop=True)
    if isinstance(result, pd.DataFrame):
        fitting = _fitting_columns(result, rtype.elementType if isinstance(rtype, ArrayType) else rtype)
        values = fitting.to_numpy().tolist() if isinstance(rtype, ArrayType) else fitting.iloc[:, 0].tolist()
    elif isinstance(result, (pd.Series, np.ndarray)):
        values = result.tolist()
    elif isinstance(result, (list, tuple)):
        values = list(result)
    else:
        values = [result]
    values = [_plain(v) for v in values]
    if isinstance(rtype, ArrayType):
        return pd.Series([None if v is None else (v if isinstance(v, list) else [v]) for v in values])
    return _cast(pd.Series(values), rtype)


def _fitting_columns(frame: Any, element: Any) -> Any:
    """The output columns whose values fit ``element`` (as MLflow: numbers for numeric types, booleans for
    boolean, any column for strings)."""
    from pandas.api import types as pt
    from pyspark.sql import types as T

    if isinstance(element, (T.IntegerType, T.LongType, T.ShortType, T.ByteType)):
        fits = pt.is_integer_dtype
    elif isinstance(element, (T.FloatType, T.DoubleType)):
        fits = lambda dtype: pt.is_numeric_dtype(dtype) and not pt.is_bool_dtype(dtype)  # noqa: E731
    elif isinstance(element, T.BooleanType):
        fits = pt.is_bool_dtype
    else:
        return frame
    keep = [c for c in frame.columns if fits(frame[c].dtype)]
    if not keep:
        raise ValueError(f"no column of the model's output {list(frame.columns)} holds {element.simpleString()} values")
    return frame[keep]


def _cast(series: Any, rtype: Any) -> Any:
    """A Series of the result type's values: JSON for dicts and lists into strings, numbers to their width."""
    from pyspark.sql import types as T

    if isinstance(rtype, T.StringType):
        return series.map(
            lambda v: v if v is None or isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list)) else str(v)
        )
    widths = {
        T.IntegerType: "int32",
        T.LongType: "int64",
        T.ShortType: "int16",
        T.ByteType: "int8",
        T.FloatType: "float32",
        T.DoubleType: "float64",
        T.BooleanType: "bool",
    }
    dtype = widths.get(type(rtype))
    if dtype is not None and not series.isna().any():
        return series.astype(dtype)
    return series


def _plain(value: Any) -> Any:
    """Arrow's pandas values as plain Python: numpy arrays as lists, Rows as dicts (nested)."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)) and getattr(value, "ndim", 0) > 0:
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "asDict"):
        return {k: _plain(v) for k, v in value.asDict().items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


# ---------------------------------------------------------------------------------- LLMs
def _llm_result(model: Any, spec: dict[str, Any], columns: tuple[Any, ...]) -> Any:
    """One predict call for the batch's non-null rows (one batch on the flavor's batcher), shaped as the result type."""
    import pandas as pd

    rows = _llm_rows(columns)
    live = [i for i, row in enumerate(rows) if row is not None]
    out: list[Any] = [None] * len(rows)
    if not live:
        return (
            pd.Series(out)
            if not _is_struct(spec)
            else pd.DataFrame([{}] * len(rows), columns=[f.name for f in spec["result_type"].fields])
        )
    if spec["kind"] == "llm-text":
        prompts = [rows[i] if isinstance(rows[i], str) else rows[i].get("prompt") for i in live]
        texts = model.predict(prompts, spec["params"])
        for i, text in zip(live, texts):
            out[i] = _shape_text(text, spec["result_type"])
    else:
        requests = [
            {"messages": [{"role": "user", "content": row}]} if isinstance(row, str) else row
            for row in (rows[i] for i in live)
        ]
        answers = model.predict(requests, spec["params"])
        for i, answer in zip(live, answers):
            out[i] = _shape_chat(answer, spec["result_type"])
    if _is_struct(spec):
        names = [f.name for f in spec["result_type"].fields]
        return pd.DataFrame([row if row is not None else {n: None for n in names} for row in out], columns=names)
    return pd.Series(out)


def _is_struct(spec: dict[str, Any]) -> bool:
    from pyspark.sql.types import StructType

    return isinstance(spec["result_type"], StructType)


def _llm_rows(columns: tuple[Any, ...]) -> list[Any]:
    """Each row as a prompt (str), a chat request (dict with messages) or None: a struct column gives
    requests, a string column prompts, an array column message lists."""
    import pandas as pd

    first = columns[0]
    if isinstance(first, pd.DataFrame):
        records = [
            {k: _plain(v) for k, v in r.items() if v is not None and not (isinstance(v, float) and v != v)}
            for r in first.to_dict(orient="records")
        ]
        return [r or None for r in records]
    rows: list[Any] = []
    for value in first.tolist():
        value = _plain(value)
        if value is None or (isinstance(value, float) and value != value):
            rows.append(None)
        elif isinstance(value, str):
            rows.append(value)
        elif isinstance(value, list):
            rows.append({"messages": [{k: v for k, v in m.items() if v is not None} for m in value]})
        elif isinstance(value, dict):
            rows.append(value)
        else:
            raise TypeError(
                f"an LLM scores strings (prompts), message lists or chat-request structs; got {type(value).__name__}"
            )
    return rows


def _shape_text(text: str, rtype: Any) -> Any:
    from pyspark.sql.types import ArrayType, StructType

    if isinstance(rtype, StructType):
        return {f.name: (text if f.name == "content" else None) for f in rtype.fields}
    return [text] if isinstance(rtype, ArrayType) else text


def _shape_chat(answer: dict[str, Any], rtype: Any) -> Any:
    from pyspark.sql.types import ArrayType, StructType

    choices = answer.get("choices") or []
    contents = [(c.get("message") or {}).get("content") for c in choices]
    if isinstance(rtype, ArrayType):
        return contents
    if isinstance(rtype, StructType):
        usage = answer.get("usage") or {}
        flat = {
            "content": contents[0] if contents else None,
            "finish_reason": choices[0].get("finish_reason") if choices else None,
            "id": answer.get("id"),
            "model": answer.get("model"),
            **{k: usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
        }
        return {f.name: flat.get(f.name) for f in rtype.fields}
    return contents[0] if contents else None
