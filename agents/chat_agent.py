"""``ChatAgent``: a conversational agent (MLflow's ``agent/v2/chat`` task)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Optional

from .chat_agent_types import ChatAgentChunk, ChatAgentMessage, ChatAgentRequest, ChatAgentResponse, ChatContext
from .python_model import PythonModel, drive_async_iterator, iterate_in_thread, overrides


def chat_agent_arguments(
    messages: Any, context: Any = None, custom_inputs: Optional[dict[str, Any]] = None
) -> tuple[list[ChatAgentMessage], Optional[ChatContext], Optional[dict[str, Any]]]:
    """Normalize a ChatAgent call to typed (messages, context, custom_inputs).

    ``messages`` may be a list of ChatAgentMessage or dicts, a ChatAgentRequest, or one request dict.
    """
    if isinstance(messages, dict):
        messages = ChatAgentRequest.model_validate(messages)
    if isinstance(messages, ChatAgentRequest):
        return messages.messages, messages.context, messages.custom_inputs
    if messages and not isinstance(messages[0], ChatAgentMessage):
        messages = [m if isinstance(m, ChatAgentMessage) else ChatAgentMessage.model_validate(m) for m in messages]
    if isinstance(context, dict):
        context = ChatContext.model_validate(context)
    return messages, context, custom_inputs


def _accept_any_call_form(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: Any, messages: Any, context: Any = None, custom_inputs: Optional[dict[str, Any]] = None) -> Any:
        return method(self, *chat_agent_arguments(messages, context, custom_inputs))

    return wrapper


class ChatAgent(PythonModel):
    """Base class for chat agents: override ``predict`` (and ``predict_stream`` to stream).

    ``predict(messages, context=None, custom_inputs=None) -> ChatAgentResponse``. Calls accept typed
    objects or one plain request dict. Override ``apredict`` / ``apredict_stream`` for native async code.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("predict", "predict_stream", "apredict", "apredict_stream"):
            if name in cls.__dict__:
                setattr(cls, name, _accept_any_call_form(cls.__dict__[name]))

    def _convert_messages_to_dict(self, messages: list[ChatAgentMessage]) -> list[dict[str, Any]]:
        """The messages as plain dicts (None fields left out), for an LLM client: MLflow's helper, by its name."""
        return [m.model_dump(exclude_none=True) if hasattr(m, "model_dump") else dict(m) for m in messages]

    def predict(  # type: ignore[override]
        self,
        messages: list[ChatAgentMessage],
        context: Optional[ChatContext] = None,
        custom_inputs: Optional[dict[str, Any]] = None,
    ) -> ChatAgentResponse:
        """Answer the conversation with one or more messages."""
        if overrides(self, ChatAgent, "apredict"):
            import asyncio

            return asyncio.run(self.apredict(messages, context, custom_inputs))
        raise NotImplementedError(f"{type(self).__name__} must implement predict (or apredict)")

    def predict_stream(  # type: ignore[override]
        self,
        messages: list[ChatAgentMessage],
        context: Optional[ChatContext] = None,
        custom_inputs: Optional[dict[str, Any]] = None,
    ) -> Iterator[ChatAgentChunk]:
        """Answer as a stream of chunks."""
        if overrides(self, ChatAgent, "apredict_stream"):
            return drive_async_iterator(self.apredict_stream(messages, context, custom_inputs))
        raise NotImplementedError(f"{type(self).__name__} does not implement predict_stream")

    async def apredict(  # type: ignore[override]
        self,
        messages: list[ChatAgentMessage],
        context: Optional[ChatContext] = None,
        custom_inputs: Optional[dict[str, Any]] = None,
    ) -> ChatAgentResponse:
        """Async predict; by default the sync predict in a worker thread."""
        import asyncio

        return await asyncio.to_thread(self.predict, messages, context, custom_inputs)

    async def apredict_stream(  # type: ignore[override]
        self,
        messages: list[ChatAgentMessage],
        context: Optional[ChatContext] = None,
        custom_inputs: Optional[dict[str, Any]] = None,
    ) -> AsyncIterator[ChatAgentChunk]:
        """Async predict_stream; by default the sync generator stepped in worker threads."""
        async for chunk in iterate_in_thread(self.predict_stream(messages, context, custom_inputs)):
            yield chunk
