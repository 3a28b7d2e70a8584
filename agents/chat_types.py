"""OpenAI chat-completions protocol types (MLflow's field names, OpenAI wire format).

These are the request/response/chunk shapes that ChatModel authors and the HTTP server share.
Optional fields default to ``None`` and are left out when dumped with ``exclude_none``.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import ConfigDict, Field, field_validator, model_validator

from .ids import new_id, now_seconds
from .protocol_model import ProtocolModel

ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def check_role(role: str) -> str:
    """Validate a message role against the OpenAI roles; the error lists them."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
    return role


class FunctionCall(ProtocolModel):
    """The function a tool call invokes; ``arguments`` is a JSON-encoded string, as in OpenAI."""

    name: str
    arguments: str = ""


class ToolCall(ProtocolModel):
    """One tool call made by the assistant."""

    id: str = Field(default_factory=lambda: new_id("call"))
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(ProtocolModel):
    """One chat message: OpenAI's shape with MLflow's checks (content or tool calls, tool_call_id on tools)."""

    model_config = ConfigDict(extra="ignore")

    role: str
    content: Optional[Union[str, list[dict[str, Any]]]] = None
    name: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None
    tool_call_id: Optional[str] = None
    refusal: Optional[str] = None

    _known_role = field_validator("role")(classmethod(lambda cls, role: check_role(role)))

    @model_validator(mode="after")
    def _check_shape(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a message with role 'tool' needs 'tool_call_id'")
        if self.content is None and not self.tool_calls and self.refusal is None:
            if self.role != "assistant":
                raise ValueError(f"a message with role {self.role!r} needs 'content'")
        return self

    def text(self) -> str:
        """The message's text: the string content, or its text parts joined."""
        return content_text(self.content)


def content_text(content: Union[str, list[dict[str, Any]], None]) -> str:
    """Text of an OpenAI content field: a string, or a list of parts whose text parts are joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))


class FunctionToolDefinition(ProtocolModel):
    """A function the model may call: name, description and JSON-schema parameters."""

    model_config = ConfigDict(extra="allow")

    name: str
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    strict: Optional[bool] = None


class ToolDefinition(ProtocolModel):
    """An OpenAI tool definition (``{"type": "function", "function": {...}}``)."""

    type: Literal["function"] = "function"
    function: FunctionToolDefinition


class StreamOptions(ProtocolModel):
    """OpenAI's ``stream_options``; ``include_usage`` adds a final usage chunk."""

    model_config = ConfigDict(extra="allow")

    include_usage: Optional[bool] = None


class JsonSchemaFormat(ProtocolModel):
    """``response_format.json_schema``: a named JSON schema the answer must satisfy."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, serialize_by_alias=True)

    name: str = "response"
    description: Optional[str] = None
    schema_: Optional[dict[str, Any]] = Field(default=None, alias="schema")
    strict: Optional[bool] = None


class ResponseFormat(ProtocolModel):
    """OpenAI's ``response_format``: free text, any JSON object, or JSON that satisfies a schema."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JsonSchemaFormat] = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and (self.json_schema is None or self.json_schema.schema_ is None):
            raise ValueError("response_format of type json_schema needs json_schema.schema")
        return self


class ChatParams(ProtocolModel):
    """Sampling and control parameters of a chat request (MLflow's ChatParams plus OpenAI's extras)."""

    model_config = ConfigDict(extra="allow")

    temperature: Optional[float] = Field(default=None, ge=0.0, le=2.0)
    max_tokens: Optional[int] = Field(default=None, ge=1)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1)
    stop: Optional[list[str]] = None
    n: Optional[int] = Field(default=None, ge=1, le=128)
    stream: Optional[bool] = None
    stream_options: Optional[StreamOptions] = None
    top_p: Optional[float] = Field(default=None, gt=0.0, le=1.0)
    top_k: Optional[int] = Field(default=None, ge=-1)
    frequency_penalty: Optional[float] = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: Optional[float] = Field(default=None, ge=-2.0, le=2.0)
    # vLLM's extra sampling parameters: a token stays when its probability is at least min_p times the most likely
    # one's; tokens in the prompt or already generated have positive logits divided, negative ones multiplied, by
    # repetition_penalty
    min_p: Optional[float] = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: Optional[float] = Field(default=None, gt=0.0, le=10.0)
    seed: Optional[int] = Field(default=None, ge=-(2**63), lt=2**64)  # what a 64-bit generator can be seeded with
    tools: Optional[list[ToolDefinition]] = None
    tool_choice: Optional[Union[str, dict[str, Any]]] = None
    parallel_tool_calls: Optional[bool] = None
    response_format: Optional[ResponseFormat] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = Field(default=None, ge=0, le=20)
    logit_bias: Optional[dict[str, float]] = None
    metadata: Optional[dict[str, Any]] = None
    user: Optional[str] = None
    custom_inputs: Optional[dict[str, Any]] = None

    @field_validator("stop", mode="before", json_schema_input_type=Optional[Union[str, list[str]]])
    @classmethod
    def _stop_as_list(cls, stop: Any) -> Any:
        return [stop] if isinstance(stop, str) else stop

    def token_limit(self) -> Optional[int]:
        """The output token cap: ``max_completion_tokens`` wins over the older ``max_tokens``."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class ChatCompletionRequest(ChatParams):
    """A chat-completions request body: the messages plus ChatParams (and the model name)."""

    model: Optional[str] = None
    messages: list[ChatMessage] = Field(min_length=1)

    def params(self) -> ChatParams:
        """The parameters alone, as ChatModel.predict receives them."""
        return ChatParams.model_validate(self.model_dump(exclude={"messages", "model"}, exclude_none=True))


class TopTokenLogProb(ProtocolModel):
    token: str
    logprob: float
    bytes: Optional[list[int]] = None


class TokenLogProb(TopTokenLogProb):
    top_logprobs: list[TopTokenLogProb] = Field(default_factory=list)


class ChatChoiceLogProbs(ProtocolModel):
    content: Optional[list[TokenLogProb]] = None


class ChatChoice(ProtocolModel):
    """One completion choice."""

    index: int = 0
    message: ChatMessage
    finish_reason: Optional[str] = "stop"
    logprobs: Optional[ChatChoiceLogProbs] = None


class TokenUsageStats(ProtocolModel):
    """Token counts of one request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletionResponse(ProtocolModel):
    """A chat-completions response; ``id`` and ``created`` are filled in when omitted."""

    id: str = Field(default_factory=lambda: new_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=now_seconds)
    model: str = ""
    choices: list[ChatChoice]
    usage: Optional[TokenUsageStats] = None
    custom_outputs: Optional[dict[str, Any]] = None


class ToolCallFunctionDelta(ProtocolModel):
    name: Optional[str] = None
    arguments: Optional[str] = None


class ToolCallDelta(ProtocolModel):
    """A fragment of a streamed tool call: index/id/name first, argument fragments after."""

    index: int = 0
    id: Optional[str] = None
    type: Optional[Literal["function"]] = None
    function: Optional[ToolCallFunctionDelta] = None


class ChatChoiceDelta(ProtocolModel):
    """The incremental part of a streamed choice."""

    role: Optional[str] = None
    content: Optional[str] = None
    refusal: Optional[str] = None
    tool_calls: Optional[list[ToolCallDelta]] = None


class ChatChunkChoice(ProtocolModel):
    index: int = 0
    delta: ChatChoiceDelta
    finish_reason: Optional[str] = None
    logprobs: Optional[ChatChoiceLogProbs] = None


class ChatCompletionChunk(ProtocolModel):
    """One streamed chat-completions chunk; ``id`` and ``created`` are filled in when omitted."""

    id: str = Field(default_factory=lambda: new_id("chatcmpl"))
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=now_seconds)
    model: str = ""
    choices: list[ChatChunkChoice] = Field(default_factory=list)
    usage: Optional[TokenUsageStats] = None
    custom_outputs: Optional[dict[str, Any]] = None


#: The input example of MLflow's ChatModel (``mlflow.types.llm.CHAT_MODEL_INPUT_EXAMPLE``).
CHAT_MODEL_INPUT_EXAMPLE = {
    "messages": [{"role": "user", "content": "Hello!"}],
    "temperature": 1.0,
    "max_tokens": 10,
    "stop": ["\n"],
    "n": 1,
    "stream": False,
}
