"""Adapters that give every kind of loaded model one calling convention: ``predict(data, params)``.

Agents take and return plain dicts (JSON-ready) at this boundary; inside they get typed objects.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any, Optional

from servelm.agents import ChatAgent, ChatModel, PythonModel, PythonModelContext, ResponsesAgent
from servelm.agents.chat_agent_types import ChatAgentRequest
from servelm.agents.chat_types import ChatCompletionRequest
from servelm.agents.python_model import takes_context
from servelm.agents.responses_types import ResponsesAgentRequest

TASK_CHAT_MODEL = "agent/v1/chat"
TASK_CHAT_AGENT = "agent/v2/chat"
TASK_RESPONSES_AGENT = "agent/v1/responses"


def request_rows(frame: Any) -> list[dict[str, Any]]:
    """A DataFrame's rows as request dicts, empty cells (None, NaN) left out and numpy values made plain."""
    rows = []
    for row in frame.to_dict(orient="records"):
        rows.append(
            {
                k: (v.tolist() if hasattr(v, "tolist") else v)
                for k, v in row.items()
                if v is not None and not (isinstance(v, float) and v != v)
            }
        )
    return rows


def request_dict(data: Any) -> Any:
    """An agent request as a dict: MLflow's pyfunc layer hands agents a one-row pandas DataFrame."""
    if type(data).__name__ == "DataFrame" and hasattr(data, "to_dict"):
        rows = request_rows(data)
        return rows[0] if len(rows) == 1 else rows
    return data


def plain(obj: Any) -> Any:
    """A pydantic object as a JSON-ready dict (None fields left out); anything else unchanged."""
    return obj.model_dump(exclude_none=True) if hasattr(obj, "model_dump") else obj


class PythonModelWrapper:
    """Calls a plain PythonModel with or without ``context`` / ``params``, as its signature asks."""

    def __init__(self, python_model: PythonModel, context: PythonModelContext):
        self.python_model = python_model
        self.context = context
        self._with_context = takes_context(python_model.predict)
        self._with_params = "params" in inspect.signature(python_model.predict).parameters
        stream = getattr(python_model, "predict_stream", None)
        self._stream_with_context = takes_context(stream) if stream else False

    def _args(
        self, data: Any, params: Optional[dict[str, Any]], with_context: bool, with_params: bool
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args: tuple[Any, ...] = (self.context, data) if with_context else (data,)
        return args, ({"params": params} if with_params else {})

    def predict(self, data: Any, params: Optional[dict[str, Any]] = None) -> Any:
        args, kwargs = self._args(data, params, self._with_context, self._with_params)
        return self.python_model.predict(*args, **kwargs)

    def predict_stream(self, data: Any, params: Optional[dict[str, Any]] = None) -> Iterator[Any]:
        args, kwargs = self._args(data, params, self._stream_with_context, True)
        return self.python_model.predict_stream(*args, **kwargs)


class ChatModelWrapper:
    """A ChatModel behind dicts: an OpenAI chat request dict in, a response dict out."""

    def __init__(self, chat_model: ChatModel, context: PythonModelContext):
        self.python_model = chat_model
        self.context = context

    def predict(self, data: Any, params: Optional[dict[str, Any]] = None) -> Any:
        data = request_dict(data)
        if isinstance(data, list):
            return [self.predict(item, params) for item in data]
        request = ChatCompletionRequest.model_validate({**data, **(params or {})} if params else data)
        return self.python_model.predict(self.context, request.messages, request.params()).model_dump(exclude_none=True)

    def predict_stream(self, data: Any, params: Optional[dict[str, Any]] = None) -> Iterator[dict[str, Any]]:
        data = request_dict(data)
        request = ChatCompletionRequest.model_validate({**data, **(params or {})} if params else data)
        for chunk in self.python_model.predict_stream(self.context, request.messages, request.params()):
            yield chunk.model_dump(exclude_none=True)


class ChatAgentWrapper:
    """A ChatAgent behind dicts: ``{"messages": [...], "context": ..., "custom_inputs": ...}``."""

    def __init__(self, agent: ChatAgent, context: PythonModelContext):
        self.python_model = agent
        self.context = context

    def predict(self, data: Any, params: Optional[dict[str, Any]] = None) -> Any:
        data = request_dict(data)
        if isinstance(data, list):
            return [self.predict(item, params) for item in data]
        request = ChatAgentRequest.model_validate(data)
        return self.python_model.predict(request.messages, request.context, request.custom_inputs).model_dump(
            exclude_none=True
        )

    def predict_stream(self, data: Any, params: Optional[dict[str, Any]] = None) -> Iterator[dict[str, Any]]:
        data = request_dict(data)
        request = ChatAgentRequest.model_validate(data)
        for chunk in self.python_model.predict_stream(request.messages, request.context, request.custom_inputs):
            yield chunk.model_dump(exclude_none=True)


class ResponsesAgentWrapper:
    """A ResponsesAgent behind dicts: a Responses request dict in, a response dict / event dicts out."""

    def __init__(self, agent: ResponsesAgent, context: PythonModelContext):
        self.python_model = agent
        self.context = context

    def predict(self, data: Any, params: Optional[dict[str, Any]] = None) -> Any:
        data = request_dict(data)
        if isinstance(data, list):
            return [self.predict(item, params) for item in data]
        return self.python_model.predict(ResponsesAgentRequest.model_validate(data)).model_dump(exclude_none=True)

    def predict_stream(self, data: Any, params: Optional[dict[str, Any]] = None) -> Iterator[dict[str, Any]]:
        data = request_dict(data)
        for event in self.python_model.predict_stream(ResponsesAgentRequest.model_validate(data)):
            yield plain(event)


def wrap_python_model(python_model: PythonModel, context: PythonModelContext) -> Any:
    """The adapter for a loaded model object, chosen by its base class."""
    if isinstance(python_model, ChatAgent):
        return ChatAgentWrapper(python_model, context)
    if isinstance(python_model, ResponsesAgent):
        return ResponsesAgentWrapper(python_model, context)
    if isinstance(python_model, ChatModel):
        return ChatModelWrapper(python_model, context)
    return PythonModelWrapper(python_model, context)


def task_of(python_model: Any) -> Optional[str]:
    """The MLflow task name written into metadata for an agent object (None for plain models)."""
    if isinstance(python_model, ChatAgent):
        return TASK_CHAT_AGENT
    if isinstance(python_model, ResponsesAgent):
        return TASK_RESPONSES_AGENT
    if isinstance(python_model, ChatModel):
        return TASK_CHAT_MODEL
    return None
