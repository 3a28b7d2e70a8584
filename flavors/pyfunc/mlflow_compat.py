"""Models written for MLflow, served by servelm as they are.

A models-from-code file or a cloudpickle may hold an object of MLflow's classes (``mlflow.pyfunc.ChatAgent``,
``ChatModel``, ``ResponsesAgent``, ``PythonModel``), a plain callable, or a LangChain runnable.
``as_servelm_model`` gives each the servelm class that the server and the wrappers know: MLflow's agents
behind adapters that convert servelm's typed requests to MLflow's types and MLflow's answers back, a
callable as a ``FunctionPythonModel``, a runnable as a ``RunnableModel``. servelm's own objects (and plain
MLflow PythonModels, which share servelm's calling convention) are returned as they are, so the hot path
of a servelm agent does not change.

Nothing here imports mlflow unless the object came from it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Optional

from servelm.agents import (
    ChatAgent,
    ChatAgentChunk,
    ChatAgentResponse,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatModel,
    FunctionPythonModel,
    PythonModel,
    ResponsesAgent,
    ResponsesAgentResponse,
    ResponsesAgentStreamEvent,
)

MLFLOW_INSTALL_HINT = "this model needs MLflow installed: pip install mlflow"


def mlflow_base(obj: Any) -> Optional[str]:
    """The name of the MLflow pyfunc base class ``obj`` derives from (ChatAgent, ChatModel,
    ResponsesAgent, PythonModel), or None. Reads the class's MRO: mlflow is not imported."""
    found = None
    for cls in type(obj).__mro__:
        if cls.__module__.startswith("mlflow.pyfunc") and cls.__name__ in (
            "ChatAgent",
            "ChatModel",
            "ResponsesAgent",
            "PythonModel",
        ):
            found = cls.__name__
            if found != "PythonModel":
                return found
    return found


def _overrides_mlflow(obj: Any, name: str) -> bool:
    """True when ``obj``'s class implements ``name`` itself (not MLflow's base class stub)."""
    for cls in type(obj).__mro__:
        if name in cls.__dict__:
            return not cls.__module__.startswith("mlflow.")
    return False


def _dump(obj: Any) -> Any:
    """A pydantic object or MLflow dataclass as a plain dict (None fields left out)."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(exclude_none=True)
    if hasattr(obj, "to_dict") and not isinstance(obj, dict):
        return obj.to_dict()
    return obj


def is_langchain_runnable(obj: Any) -> bool:
    """A LangChain Runnable (by its MRO: langchain is not imported)."""
    return any(
        cls.__module__.startswith("langchain_core.runnables") and cls.__name__ == "Runnable"
        for cls in type(obj).__mro__
    )


def as_servelm_model(obj: Any) -> Any:
    """The servelm model object for whatever a code file or pickle produced (see the module docstring)."""
    if isinstance(obj, PythonModel):
        return obj
    base = mlflow_base(obj)
    if base == "ChatAgent":
        return _adapter(MlflowChatAgent, obj)
    if base == "ChatModel":
        return _adapter(MlflowChatModel, obj)
    if base == "ResponsesAgent":
        return _adapter(MlflowResponsesAgent, obj)
    if base == "PythonModel" or hasattr(obj, "predict"):
        return obj  # MLflow's PythonModel calling convention is servelm's (PythonModelWrapper handles both)
    if is_langchain_runnable(obj):
        return RunnableModel(obj)
    if callable(obj):
        return FunctionPythonModel(obj)
    return obj


def unwrap(model: Any) -> Any:
    """The object the user wrote, behind an adapter of this module."""
    if isinstance(model, (MlflowChatAgent, MlflowChatModel, MlflowResponsesAgent, RunnableModel)):
        return model.inner
    return model


def _adapter(cls: Any, inner: Any) -> Any:
    """An instance of ``cls`` around ``inner``; stream methods only when ``inner`` implements them (the
    server decides whether a model streams by the methods its class overrides)."""
    if not _overrides_mlflow(inner, "predict_stream"):
        cls = {
            MlflowChatAgent: _MlflowChatAgentNoStream,
            MlflowChatModel: _MlflowChatModelNoStream,
            MlflowResponsesAgent: _MlflowResponsesAgentNoStream,
        }[cls]
    adapter = cls.__new__(cls)
    adapter.inner = inner
    return adapter


class _Adapter:
    inner: Any

    def load_context(self, context: Any) -> None:
        load = getattr(self.inner, "load_context", None)
        if load is not None:
            load(context)

    def __getattr__(self, name: str) -> Any:  # attributes of the user's object (max_batch_size...)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def _chat_agent_types() -> Any:
    try:
        from mlflow.types import agent
    except ImportError as exc:  # pragma: no cover - the object itself came from mlflow
        raise ImportError(MLFLOW_INSTALL_HINT) from exc
    return agent


class _MlflowChatAgentBase(_Adapter, ChatAgent):
    """An ``mlflow.pyfunc.ChatAgent`` behind servelm's ChatAgent."""

    def _args(self, messages: Any, context: Any, custom_inputs: Any) -> tuple[Any, ...]:
        types = _chat_agent_types()
        converted = [types.ChatAgentMessage(**_dump(m)) for m in messages]
        return converted, types.ChatContext(**_dump(context)) if context is not None else None, custom_inputs

    def predict(self, messages, context=None, custom_inputs=None):
        return ChatAgentResponse.model_validate(
            _dump(self.inner.predict(*self._args(messages, context, custom_inputs)))
        )


class MlflowChatAgent(_MlflowChatAgentBase):
    def predict_stream(self, messages, context=None, custom_inputs=None):
        for chunk in self.inner.predict_stream(*self._args(messages, context, custom_inputs)):
            yield ChatAgentChunk.model_validate(_dump(chunk))


class _MlflowChatAgentNoStream(_MlflowChatAgentBase):
    pass


class _MlflowChatModelBase(_Adapter, ChatModel):
    """An ``mlflow.pyfunc.ChatModel`` (MLflow's dataclass types) behind servelm's ChatModel."""

    def _args(self, context: Any, messages: Any, params: Any) -> tuple[Any, ...]:
        from mlflow.types.llm import ChatMessage, ChatParams

        return context, [ChatMessage.from_dict(_dump(m)) for m in messages], ChatParams.from_dict(_dump(params))

    def predict(self, context, messages, params):
        return ChatCompletionResponse.model_validate(_dump(self.inner.predict(*self._args(context, messages, params))))


class MlflowChatModel(_MlflowChatModelBase):
    def predict_stream(self, context, messages, params):
        for chunk in self.inner.predict_stream(*self._args(context, messages, params)):
            yield ChatCompletionChunk.model_validate(_dump(chunk))


class _MlflowChatModelNoStream(_MlflowChatModelBase):
    pass


class _MlflowResponsesAgentBase(_Adapter, ResponsesAgent):
    """An ``mlflow.pyfunc.ResponsesAgent`` behind servelm's ResponsesAgent."""

    @staticmethod
    def _request(request: Any) -> Any:
        from mlflow.types.responses import ResponsesAgentRequest

        return ResponsesAgentRequest(**request.model_dump(exclude_none=True))

    def predict(self, request):
        return ResponsesAgentResponse.model_validate(_dump(self.inner.predict(self._request(request))))


class MlflowResponsesAgent(_MlflowResponsesAgentBase):
    def predict_stream(self, request):
        for event in self.inner.predict_stream(self._request(request)):
            yield ResponsesAgentStreamEvent.model_validate(_dump(event))


class _MlflowResponsesAgentNoStream(_MlflowResponsesAgentBase):
    pass


class RunnableModel(PythonModel):
    """A LangChain runnable as a PythonModel, as MLflow's langchain flavor serves one: a list of inputs is
    batched, one input (a dict or a string) is invoked; ``predict_stream`` streams one input."""

    def __init__(self, runnable: Any):
        self.inner = runnable

    def predict(self, context: Any, model_input: Any, params: Optional[dict[str, Any]] = None) -> Any:
        if type(model_input).__name__ == "DataFrame":
            model_input = model_input.to_dict(orient="records")
        if isinstance(model_input, list):
            return [_dump(out) for out in self.inner.batch(model_input)]
        return _dump(self.inner.invoke(model_input))

    def predict_stream(self, context: Any, model_input: Any, params: Optional[dict[str, Any]] = None) -> Iterator[Any]:
        for chunk in self.inner.stream(model_input):
            yield _dump(chunk)
