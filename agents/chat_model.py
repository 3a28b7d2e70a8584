"""``ChatModel``: an OpenAI-style chat model (MLflow's ``agent/v1/chat`` task)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Optional

from .chat_types import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, ChatParams
from .python_model import PythonModel, PythonModelContext, drive_async_iterator, iterate_in_thread, overrides


def chat_model_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Optional[PythonModelContext], list[ChatMessage], ChatParams]:
    """Normalize the call forms a ChatModel accepts to (context, typed messages, typed params).

    Accepted: ``(messages, params)``, ``(context, messages, params)``, ``(request_dict)``,
    ``(context, request_dict)``, and the same as keywords; messages and params may be dicts.
    """
    context = kwargs.pop("context", None)
    if args and (args[0] is None or isinstance(args[0], PythonModelContext)):
        context, args = args[0], args[1:]
    messages = kwargs.pop("messages", args[0] if args else None)
    params = kwargs.pop("params", args[1] if len(args) > 1 else None)
    if isinstance(messages, (dict, ChatCompletionRequest)):
        request = (
            messages if isinstance(messages, ChatCompletionRequest) else ChatCompletionRequest.model_validate(messages)
        )
        return context, request.messages, _mlflow_defaults(request.params())
    if messages is None:
        raise TypeError("ChatModel.predict needs messages (a list) or one request dict")
    if messages and not isinstance(messages[0], ChatMessage):
        messages = [m if isinstance(m, ChatMessage) else ChatMessage.model_validate(m) for m in messages]
    if params is None:
        params = ChatParams()
    elif not isinstance(params, ChatParams):
        params = ChatParams.model_validate(params)
    return context, messages, _mlflow_defaults(params)


#: what a ChatModel's params hold when the request leaves them out: MLflow's ChatParams defaults
_PARAM_DEFAULTS = (("temperature", 1.0), ("n", 1), ("stream", False))


def _mlflow_defaults(params: ChatParams) -> ChatParams:
    """``params`` with MLflow's defaults where the request gave nothing (a ChatModel written for MLflow reads
    ``params.temperature`` as a number)."""
    missing = {k: v for k, v in _PARAM_DEFAULTS if getattr(params, k) is None}
    return params.model_copy(update=missing) if missing else params


def _accept_any_call_form(method: Callable[..., Any]) -> Callable[..., Any]:
    with_context = _first_parameter_is_context(method)

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        context, messages, params = chat_model_arguments(args, kwargs)
        if with_context:
            return method(self, context, messages, params)
        return method(self, messages, params)

    return wrapper


def _first_parameter_is_context(method: Callable[..., Any]) -> bool:
    names = method.__code__.co_varnames[1 : method.__code__.co_argcount]
    return bool(names) and names[0] == "context"


class ChatModel(PythonModel):
    """Base class for chat models: override ``predict`` (and ``predict_stream`` to stream).

    ``predict(context, messages, params) -> ChatCompletionResponse``; ``context`` may be left out of the
    signature. Calls accept typed objects or one plain request dict. Override ``apredict`` /
    ``apredict_stream`` for native async code.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("predict", "predict_stream", "apredict", "apredict_stream"):
            if name in cls.__dict__:
                setattr(cls, name, _accept_any_call_form(cls.__dict__[name]))

    def predict(  # type: ignore[override]
        self, context: Optional[PythonModelContext], messages: list[ChatMessage], params: ChatParams
    ) -> ChatCompletionResponse:
        """Answer the conversation."""
        if overrides(self, ChatModel, "apredict"):
            import asyncio

            return asyncio.run(self.apredict(context, messages, params))
        raise NotImplementedError(f"{type(self).__name__} must implement predict (or apredict)")

    def predict_stream(  # type: ignore[override]
        self, context: Optional[PythonModelContext], messages: list[ChatMessage], params: ChatParams
    ) -> Iterator[ChatCompletionChunk]:
        """Answer the conversation as a stream of chunks."""
        if overrides(self, ChatModel, "apredict_stream"):
            return drive_async_iterator(self.apredict_stream(context, messages, params))
        raise NotImplementedError(f"{type(self).__name__} does not implement predict_stream")

    async def apredict(  # type: ignore[override]
        self, context: Optional[PythonModelContext], messages: list[ChatMessage], params: ChatParams
    ) -> ChatCompletionResponse:
        """Async predict; by default the sync predict in a worker thread."""
        import asyncio

        return await asyncio.to_thread(self.predict, context, messages, params)

    async def apredict_stream(  # type: ignore[override]
        self, context: Optional[PythonModelContext], messages: list[ChatMessage], params: ChatParams
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Async predict_stream; by default the sync generator stepped in worker threads."""
        async for chunk in iterate_in_thread(self.predict_stream(context, messages, params)):
            yield chunk
