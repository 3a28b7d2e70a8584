"""Typed agent interfaces: protocol types (OpenAI chat, MLflow ChatAgent, OpenAI Responses) and base classes."""

from .chat_agent import ChatAgent
from .chat_agent_types import (
    CHAT_AGENT_INPUT_EXAMPLE,
    ChatAgentChunk,
    ChatAgentMessage,
    ChatAgentRequest,
    ChatAgentResponse,
    ChatContext,
)
from .chat_model import ChatModel
from .chat_types import (
    CHAT_MODEL_INPUT_EXAMPLE,
    ChatChoice,
    ChatChoiceDelta,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ChatParams,
    FunctionCall,
    FunctionToolDefinition,
    TokenUsageStats,
    ToolCall,
    ToolCallDelta,
    ToolCallFunctionDelta,
    ToolDefinition,
)
from .completion_types import CompletionRequest
from .llm_client import async_llm_client, llm_client
from .protocol_model import ProtocolModel
from .python_model import FunctionPythonModel, PythonModel, PythonModelContext
from .responses_agent import ResponsesAgent
from .responses_types import (
    RESPONSES_AGENT_INPUT_EXAMPLE,
    ResponsesAgentRequest,
    ResponsesAgentResponse,
    ResponsesAgentStreamEvent,
    ResponsesItem,
    ResponsesUsage,
)

__version__ = "0.1.0"

__all__ = [
    "llm_client",
    "async_llm_client",
    "CHAT_AGENT_INPUT_EXAMPLE",
    "CHAT_MODEL_INPUT_EXAMPLE",
    "RESPONSES_AGENT_INPUT_EXAMPLE",
    "ProtocolModel",
    "ChatAgent",
    "ChatAgentChunk",
    "ChatAgentMessage",
    "ChatAgentRequest",
    "ChatAgentResponse",
    "ChatContext",
    "ChatModel",
    "CompletionRequest",
    "ChatChoice",
    "ChatChoiceDelta",
    "ChatChunkChoice",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatMessage",
    "ChatParams",
    "FunctionCall",
    "FunctionToolDefinition",
    "TokenUsageStats",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallFunctionDelta",
    "ToolDefinition",
    "FunctionPythonModel",
    "PythonModel",
    "PythonModelContext",
    "ResponsesAgent",
    "ResponsesAgentRequest",
    "ResponsesAgentResponse",
    "ResponsesAgentStreamEvent",
    "ResponsesItem",
    "ResponsesUsage",
    "__version__",
]
