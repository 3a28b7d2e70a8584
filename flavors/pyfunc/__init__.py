"""The python_function flavor: save any Python model or agent, load it back as a ``PyFuncModel``.

The names MLflow's ``mlflow.pyfunc`` module has are here too (the base classes, ``get_model_dependencies``),
so code written for MLflow runs with its imports swapped.
"""

from servelm.agents import ChatAgent, ChatModel, PythonModel, PythonModelContext, ResponsesAgent

from .load import PyFuncModel, get_model_dependencies, load_model
from .save import save_model

__all__ = ["ChatAgent", "ChatModel", "PyFuncModel", "PythonModel", "PythonModelContext", "ResponsesAgent", "get_model_dependencies", "load_model", "save_model"]
