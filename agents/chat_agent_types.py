"""MLflow ChatAgent protocol types (``agent/v2/chat``): messages with ids, context, chunks."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field, field_validator, model_validator

from .chat_types import TokenUsageStats, ToolCall, check_role
from .ids import new_id
from .protocol_model import ProtocolModel


class ChatContext(ProtocolModel):
    """Who is talking, in which conversation."""

    conversation_id: Optional[str] = None
    user_id: Optional[str] = None


class ChatAgentMessage(ProtocolModel):
    """One message of a ChatAgent conversation; needs content or tool calls, tool messages a tool_call_id."""

    role: str
    content: Optional[str] = None
    name: Optional[str] = None
    id: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None
    tool_call_id: Optional[str] = None
    attachments: Optional[dict[str, str]] = None

    _known_role = field_validator("role")(classmethod(lambda cls, role: check_role(role)))

    @model_validator(mode="after")
    def _check_shape(self) -> ChatAgentMessage:
        if self.content is None and not self.tool_calls:
            raise ValueError("a ChatAgentMessage needs 'content' or 'tool_calls'")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a message with role 'tool' needs 'tool_call_id'")
        return self


class ChatAgentRequest(ProtocolModel):
    """The request a ChatAgent receives: the conversation, optional context and custom inputs."""

    messages: list[ChatAgentMessage] = Field(min_length=1)
    context: Optional[ChatContext] = None
    custom_inputs: Optional[dict[str, Any]] = None
    stream: Optional[bool] = None


class ChatAgentResponse(ProtocolModel):
    """A ChatAgent's answer: one or more messages (ids filled in when the agent left them out)."""

    messages: list[ChatAgentMessage]
    finish_reason: Optional[str] = None
    custom_outputs: Optional[dict[str, Any]] = None
    usage: Optional[TokenUsageStats] = None

    @model_validator(mode="after")
    def _fill_ids(self) -> ChatAgentResponse:
        for message in self.messages:
            if message.id is None:
                message.id = new_id("msg")
        return self


class ChatAgentChunk(ProtocolModel):
    """One streamed piece of a ChatAgent's answer; chunks with the same delta id form one message."""

    delta: ChatAgentMessage
    finish_reason: Optional[str] = None
    custom_outputs: Optional[dict[str, Any]] = None
    usage: Optional[TokenUsageStats] = None


#: The input example MLflow's ChatAgent docs use (``mlflow.types.agent.CHAT_AGENT_INPUT_EXAMPLE``).
CHAT_AGENT_INPUT_EXAMPLE = {"messages": [{"role": "user", "content": "Hello!"}]}
