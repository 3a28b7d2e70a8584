"""The python_function flavor: save any Python model or agent, load it back as a ``PyFuncModel``; score a
model directory on Spark with ``spark_udf``.

The names MLflow's ``mlflow.pyfunc`` module has are here too (the base classes, ``get_model_dependencies``,
``spark_udf``), so code written for MLflow runs with its imports swapped.
"""

from typing import Any

from servelm.agents import ChatAgent, ChatModel, PythonModel, PythonModelContext, ResponsesAgent

from .pyfunc_model import PyFuncModel, get_model_dependencies, load_model
from .save import save_model


def __getattr__(name: str) -> Any:
    """``spark_udf`` (``servelm.flavors.pyfunc.spark``), imported on first use: it needs ``servelm[spark]``."""
    if name == "spark_udf":
        from .spark import spark_udf

        return spark_udf
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
