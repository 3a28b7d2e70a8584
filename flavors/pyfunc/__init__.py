"""The python_function flavor: save any Python model or agent, load it back as a ``PyFuncModel``; score a
model directory on Spark with ``spark_udf``.

The names MLflow's ``mlflow.pyfunc`` module has are here too (the base classes, ``get_model_dependencies``,
``spark_udf``), so code written for MLflow runs with its imports swapped.
"""

from typing import Any, Optional

from servelm.agents import ChatAgent, ChatModel, PythonModel, PythonModelContext, ResponsesAgent

from .load import PyFuncModel, get_model_dependencies, load_model
from .save import save_model


def spark_udf(
    spark: Any,
    model_uri: str,
    result_type: Any = None,
    env_manager: Optional[str] = None,
    params: Optional[dict[str, Any]] = None,
    extra_env: Optional[dict[str, str]] = None,
    model_config: Optional[dict[str, Any]] = None,
) -> Any:
    """A Spark pandas UDF scoring the model directory ``model_uri``, as ``mlflow.pyfunc.spark_udf``
    (``servelm.flavors.pyfunc.spark``; needs ``servelm[spark]``)."""
    from .spark import spark_udf as _spark_udf

    return _spark_udf(spark, model_uri, result_type, env_manager, params, extra_env, model_config)


__all__ = [
    "ChatAgent",
    "ChatModel",
    "PyFuncModel",
    "PythonModel",
    "PythonModelContext",
    "ResponsesAgent",
    "get_model_dependencies",
    "load_model",
    "save_model",
    "spark_udf",
]
