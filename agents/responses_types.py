"""OpenAI Responses protocol types as MLflow's ResponsesAgent uses them (``agent/v1/responses``).

Input and output items stay open (``extra="allow"``): the Responses API has many item kinds, and an agent
must be able to pass through ones this module does not name. Stream events carry the fields the official
``openai`` client reads (sequence_number, output_index, content_index, ``logprobs: []`` on text deltas).
"""

from __future__ import annotations

import time
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .chat_agent_types import ChatContext
from .chat_types import content_text
from .ids import new_id
from .protocol_model import ProtocolModel


class ResponsesItem(ProtocolModel):
    """An input or output item: a message (role + content), a function call, its output, reasoning..."""

    model_config = ConfigDict(extra="allow")

    type: Optional[str] = None
    id: Optional[str] = None
    role: Optional[str] = None
    content: Optional[Union[str, list[Any]]] = None

    def text(self) -> str:
        """Text of a message item: the string content or its text parts joined."""
        content = self.content
        if content is None or isinstance(content, str):
            return content or ""
        parts = [p if isinstance(p, dict) else p.model_dump() for p in content if isinstance(p, (dict, BaseModel))]
        return content_text(parts)


class ResponsesAgentRequest(ProtocolModel):
    """A Responses request: input items plus options; a plain string input becomes one user message."""

    model_config = ConfigDict(extra="allow")

    input: list[ResponsesItem] = Field(min_length=1)
    model: Optional[str] = None
    instructions: Optional[str] = None
    context: Optional[ChatContext] = None
    custom_inputs: Optional[dict[str, Any]] = None
    tools: Optional[list[dict[str, Any]]] = None
    tool_choice: Optional[Union[str, dict[str, Any]]] = None
    temperature: Optional[float] = Field(default=None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(default=None, gt=0.0, le=1.0)
    max_output_tokens: Optional[int] = Field(default=None, ge=1)
    stream: Optional[bool] = None
    metadata: Optional[dict[str, str]] = None
    parallel_tool_calls: Optional[bool] = None
    previous_response_id: Optional[str] = None
    reasoning: Optional[dict[str, Any]] = None
    store: Optional[bool] = None
    text: Optional[Any] = None
    truncation: Optional[str] = None
    user: Optional[str] = None
    background: Optional[bool] = None

    @field_validator("input", mode="before", json_schema_input_type=Union[str, list[ResponsesItem]])
    @classmethod
    def _string_input(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [{"type": "message", "role": "user", "content": value}]
        return value


class ResponsesUsage(ProtocolModel):
    """Token counts in the Responses API's names."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_tokens_details: dict[str, int] = Field(default_factory=lambda: {"cached_tokens": 0, "cache_write_tokens": 0})
    output_tokens_details: dict[str, int] = Field(default_factory=lambda: {"reasoning_tokens": 0})


class ResponsesAgentResponse(ProtocolModel):
    """A Responses answer: output items, usage, custom outputs; ``output_text`` joins the text parts."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(default_factory=lambda: new_id("resp"))
    object: str = "response"
    created_at: float = Field(default_factory=time.time)
    status: Optional[str] = "completed"
    model: Optional[str] = None
    output: list[ResponsesItem]
    usage: Optional[ResponsesUsage] = None
    custom_outputs: Optional[dict[str, Any]] = None
    error: Optional[dict[str, Any]] = None
    incomplete_details: Optional[dict[str, Any]] = None

    @property
    def output_text(self) -> str:
        """All ``output_text`` parts of the message items, joined (as the openai client's property)."""
        parts: list[str] = []
        for item in self.output:
            if item.type == "message" and isinstance(item.content, list):
                for part in item.content:
                    part = part if isinstance(part, dict) else part.model_dump()
                    if part.get("type") == "output_text":
                        parts.append(part.get("text", ""))
        return "".join(parts)


class ResponsesAgentStreamEvent(ProtocolModel):
    """One Responses stream event: its ``type`` plus that type's fields (item, delta, item_id, ...)."""

    model_config = ConfigDict(extra="allow")

    type: str
    sequence_number: Optional[int] = None
    output_index: Optional[int] = None
    content_index: Optional[int] = None
    item_id: Optional[str] = None
    delta: Optional[Any] = None
    item: Optional[dict[str, Any]] = None
    custom_outputs: Optional[dict[str, Any]] = None

    @field_validator("item", mode="before")
    @classmethod
    def _item_as_dict(cls, value: Any) -> Any:
        return value.model_dump(exclude_none=True) if isinstance(value, BaseModel) else value


#: The input example of MLflow's ResponsesAgent (``mlflow.types.responses.RESPONSES_AGENT_INPUT_EXAMPLE``).
RESPONSES_AGENT_INPUT_EXAMPLE = {"input": [{"role": "user", "content": "Hello!"}]}
