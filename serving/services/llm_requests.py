"""Chat and completion requests checked and turned into what an LLM engine runs: the prompt's messages
(tools written in when the chat template does not take them), the grammar a ``response_format`` or a
forced ``tool_choice`` implies, log-probabilities, penalties and logit bias. Every parameter is honoured
or refused here with a 400 naming it, before anything is generated."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from servelm.agents import ChatCompletionRequest, ChatParams
from servelm.flavors.engine.sample.params import GuidedDecoding
from servelm.flavors.engine.structured import check_grammar
from servelm.flavors.generation.tool_calls import ToolFormat

from ..errors import APIError

#: OpenAI chat parameters no model served here can honour, refused when given (with why)
UNSUPPORTED = {
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
    "reasoning_effort": "this model does not reason in separate steps",
}


@dataclass
class ToolPlan:
    """What a request's tools mean for generation: the tools to show the model (None: none), the one it
    must call (``forced``: a name, or "*" for any), and whether several calls may come at once."""

    offered: Optional[list[dict[str, Any]]] = None
    forced: Optional[str] = None
    parallel: bool = True


def refuse_unsupported(request: ChatParams) -> None:
    """400 for OpenAI parameters that cannot be honoured (naming the parameter)."""
    extra = request.model_extra or {}
    for name, why in UNSUPPORTED.items():
        if extra.get(name) not in (None, [], {}):
            raise APIError(400, f"{name}: {why}", param=name, code="unsupported_parameter")
    modalities = extra.get("modalities")
    if modalities and any(m != "text" for m in modalities):
        raise APIError(400, "modalities: only text is supported", param="modalities", code="unsupported_value")
    if extra.get("store") is True:
        raise APIError(
            400,
            "store: chat completions are not stored here (the Responses API stores responses)",
            param="store",
            code="unsupported_value",
        )
    if request.top_logprobs is not None and not request.logprobs:
        raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs", code="invalid_value")


#: content parts a text-only model reads (chat's and the Responses API's names for text)
TEXT_PARTS = frozenset({"text", "input_text", "output_text", "refusal"})


def refuse_non_text_parts(request: ChatCompletionRequest) -> None:
    """400 naming the part for content a text-only model cannot read (an image, audio, a file), as vLLM answers
    instead of dropping it and answering as if it had not been sent."""
    for i, message in enumerate(request.messages):
        if not isinstance(message.content, list):
            continue
        for j, part in enumerate(message.content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in TEXT_PARTS:
                raise APIError(
                    400,
                    f"messages.{i}.content.{j}: this model reads text only; a {kind!r} part cannot be given to it",
                    param=f"messages.{i}.content.{j}",
                    code="unsupported_value",
                )


def tool_plan(request: ChatCompletionRequest) -> ToolPlan:
    """The request's tools and tool_choice as a ToolPlan; 400 for a choice that names no given tool."""
    tools = [t.model_dump(exclude_none=True) for t in request.tools] if request.tools else None
    choice = request.tool_choice
    parallel = request.parallel_tool_calls is not False
    if choice is None or choice == "auto":
        return ToolPlan(tools, None, parallel)
    if choice == "none":
        return ToolPlan(None, None, parallel)
    if not tools:
        raise APIError(400, "tool_choice needs tools", param="tool_choice", code="invalid_value")
    if choice == "required":
        return ToolPlan(tools, "*", parallel)
    name = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if name is None:
        raise APIError(
            400,
            'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
            param="tool_choice",
            code="invalid_value",
        )
    if name not in {t["function"]["name"] for t in tools}:
        raise APIError(
            400, f"tool_choice names {name!r}, which is not among the tools", param="tool_choice", code="invalid_value"
        )
    return ToolPlan(tools, name, parallel)


def answer_schema(request: ChatParams) -> Optional[dict[str, Any]]:
    """The JSON schema ``response_format`` asks the answer to satisfy (``{"type": "object"}`` for
    json_object), or None for free text."""
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    assert fmt.json_schema is not None and fmt.json_schema.schema_ is not None
    return fmt.json_schema.schema_


def guided_decoding(request: ChatParams, plan: ToolPlan, fmt: ToolFormat) -> Optional[GuidedDecoding]:
    """The grammar generation must follow: a forced tool call; tool calls or the JSON answer when both
    tools and a response_format are given; the JSON answer alone; or none."""
    answer = answer_schema(request)
    if plan.forced is not None:
        assert plan.offered is not None
        tools = (
            plan.offered if plan.forced == "*" else [t for t in plan.offered if t["function"]["name"] == plan.forced]
        )
        spec, param = GuidedDecoding("lark", fmt.grammar(tools, plan.parallel and plan.forced == "*")), "tools"
    elif answer is not None and plan.offered:
        spec, param = GuidedDecoding("lark", fmt.grammar(plan.offered, plan.parallel, answer)), "response_format"
    elif answer is not None:
        spec = (
            GuidedDecoding("json_object")
            if request.response_format.type == "json_object"
            else GuidedDecoding("json_schema", json.dumps(answer))
        )
        param = "response_format"
    else:
        return None
    error = check_grammar(spec)
    if error:
        raise APIError(
            400,
            f"{param}: the schema cannot be used to constrain generation: {error}",
            param=param,
            code="invalid_schema",
        )
    return spec


def logit_bias(request: ChatParams) -> Optional[dict[int, float]]:
    """``logit_bias`` with integer token ids; 400 for a key that is not one or a bias out of [-100, 100]."""
    if not request.logit_bias:
        return None
    bias = {}
    for key, value in request.logit_bias.items():
        if not str(key).lstrip("-").isdigit() or int(key) < 0:
            raise APIError(400, f"logit_bias keys are token ids; got {key!r}", param="logit_bias", code="invalid_value")
        if not -100 <= value <= 100:
            raise APIError(
                400, f"logit_bias values lie in [-100, 100]; got {value}", param="logit_bias", code="invalid_value"
            )
        bias[int(key)] = float(value)
    return bias
