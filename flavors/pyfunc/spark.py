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

What runs on the executors is ``spark_worker.py``.
"""

# No ``from __future__ import annotations``: pyspark reads the UDF's type hints as objects.

import logging
import os
from collections.abc import Iterator
from typing import Any, Optional, Union

log = logging.getLogger("servelm.spark")

#: the flavors served as LLMs, and the extra each needs on the executors
LLM_FLAVORS = {"transformers": "servelm[transformers]", "onnx": "servelm[onnx]"}
LLM_TASKS = ("llm/v1/chat", "text-generation")
#: what a struct result of an LLM may hold
LLM_FIELDS = ("content", "finish_reason", "prompt_tokens", "completion_tokens", "total_tokens", "id", "model")


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
            "an LLM scores into string (the reply), array<string> (each choice) "
            f"or a struct of {', '.join(LLM_FIELDS)}; "
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
    """Off local mode, send the model directory to the executors (its name there); None where they share this
    filesystem."""
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
            from servelm.flavors.pyfunc.spark_worker import score_batches
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
