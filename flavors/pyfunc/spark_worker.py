"""What a ``spark_udf`` runs on Spark's Python workers: the model loaded once per worker (a module-level
cache, kept while Spark reuses the worker across tasks), then each Arrow batch scored in one predict call.

Set ``SERVELM_SPARK_LOG`` to a file path and each Python worker appends a line when it loads a model
(``load``, pid, model, seconds) and when it scores a batch (``predict``, pid, rows, seconds).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any, Optional

log = logging.getLogger("servelm.spark")

_MODELS: dict[tuple[str, str], Any] = {}  # (model path, model_config as JSON) -> loaded model, per Python worker


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
        return load_model(path, model_config=spec["model_config"] or None)
    except Exception as exc:
        missing = _missing_module(exc)
        if missing is None:
            raise
        raise RuntimeError(
            f"this Spark executor's Python ({sys.executable}) lacks the module {missing!r}, "
            f"which the model {path} needs: "
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
