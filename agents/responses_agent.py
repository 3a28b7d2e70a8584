"""``ResponsesAgent``: an agent speaking the OpenAI Responses API (MLflow's ``agent/v1/responses``)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Optional

from . import responses_conversions as conversions
from .python_model import PythonModel, drive_async_iterator, iterate_in_thread, overrides
from .responses_types import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent


def responses_request(request: Any) -> ResponsesAgentRequest:
    """A typed ResponsesAgentRequest from a typed one or a plain dict."""
    if isinstance(request, ResponsesAgentRequest):
        return request
    return ResponsesAgentRequest.model_validate(request)


def _accept_dict(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: Any, request: Any) -> Any:
        return method(self, responses_request(request))

    return wrapper


class ResponsesAgent(PythonModel):
    """Base class for Responses agents: override ``predict`` (and ``predict_stream`` to stream).

    ``predict(request) -> ResponsesAgentResponse``; ``predict_stream(request)`` yields stream events.
    The ``create_*`` helpers build wire-valid output items and text deltas.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("predict", "predict_stream", "apredict", "apredict_stream"):
            if name in cls.__dict__:
                setattr(cls, name, _accept_dict(cls.__dict__[name]))

    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:  # type: ignore[override]
        """Answer the request with output items."""
        if overrides(self, ResponsesAgent, "apredict"):
            import asyncio

            return asyncio.run(self.apredict(request))
        raise NotImplementedError(f"{type(self).__name__} must implement predict (or apredict)")

    def predict_stream(  # type: ignore[override]
        self, request: ResponsesAgentRequest
    ) -> Iterator[ResponsesAgentStreamEvent]:
        """Answer as a stream of events (text deltas, then ``response.output_item.done`` per item)."""
        if overrides(self, ResponsesAgent, "apredict_stream"):
            return drive_async_iterator(self.apredict_stream(request))
        raise NotImplementedError(f"{type(self).__name__} does not implement predict_stream")

    async def apredict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:  # type: ignore[override]
        """Async predict; by default the sync predict in a worker thread."""
        import asyncio

        return await asyncio.to_thread(self.predict, request)

    async def apredict_stream(  # type: ignore[override]
        self, request: ResponsesAgentRequest
    ) -> AsyncIterator[ResponsesAgentStreamEvent]:
        """Async predict_stream; by default the sync generator stepped in worker threads."""
        async for event in iterate_in_thread(self.predict_stream(request)):
            yield event

    # MLflow's helpers, with its names: output items, stream events and the chat LLM conversions
    # (agents/responses_conversions.py).
    @staticmethod
    def create_text_output_item(
        text: str, id: Optional[str] = None, annotations: Optional[list[dict[str, Any]]] = None
    ) -> dict[str, Any]:
        """An assistant message item holding one ``output_text`` part."""
        return conversions.text_output_item(text, id, annotations)

    @staticmethod
    def create_text_delta(delta: str, item_id: str, output_index: int = 0, content_index: int = 0) -> dict[str, Any]:
        """A ``response.output_text.delta`` event body (wire-valid: indexes and ``logprobs: []``)."""
        return conversions.text_delta(delta, item_id, output_index, content_index)

    @staticmethod
    def create_annotation_added(
        item_id: str, annotation: dict[str, Any], annotation_index: Optional[int] = 0
    ) -> dict[str, Any]:
        """A ``response.output_text.annotation.added`` event body."""
        return {
            "type": "response.output_text.annotation.added",
            "item_id": item_id,
            "annotation_index": annotation_index,
            "annotation": annotation,
        }

    @staticmethod
    def create_function_call_item(id: str, call_id: str, name: str, arguments: str) -> dict[str, Any]:
        """A ``function_call`` output item (the model asks the caller to run a tool)."""
        return conversions.function_call_item(id, call_id, name, arguments)

    @staticmethod
    def create_function_call_output_item(call_id: str, output: str) -> dict[str, Any]:
        """A ``function_call_output`` item (a tool's result, fed back as input)."""
        return conversions.function_call_output_item(call_id, output)

    @staticmethod
    def create_reasoning_item(id: str, reasoning_text: str) -> dict[str, Any]:
        """A ``reasoning`` item with one summary text."""
        return conversions.reasoning_item(id, reasoning_text)

    @staticmethod
    def prep_msgs_for_cc_llm(responses_input: Sequence[Any]) -> list[dict[str, Any]]:
        """Responses input items as Chat Completions messages, for a chat LLM client."""
        return conversions.to_chat_messages(responses_input)

    @staticmethod
    def _responses_to_cc(message: dict[str, Any]) -> list[dict[str, Any]]:
        """One Responses item as Chat Completions messages."""
        return conversions.item_to_chat_messages(message)

    @staticmethod
    def output_to_responses_items_stream(
        chunks: Iterator[Any], aggregator: Optional[list[dict[str, Any]]] = None
    ) -> Iterator[ResponsesAgentStreamEvent]:
        """A chat LLM's stream (chat completion chunk dicts or LangChain messages) as Responses stream events;
        ``aggregator`` collects the finished output items."""
        yield from conversions.chat_stream_to_responses_events(iter(chunks), aggregator)

    @staticmethod
    def responses_agent_output_reducer(chunks: list[Any]) -> dict[str, Any]:
        """The response a list of stream events adds up to (its finished items)."""
        return conversions.response_from_events(chunks)
