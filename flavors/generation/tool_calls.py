"""Tool calls in a model's own syntax: detecting the syntax from its chat template, grammars that force a
valid call, and a streaming parser that turns generated text into OpenAI tool calls.

Formats (``TOOL_FORMATS``, vLLM's parser names):
- ``hermes`` (Hermes, Qwen): ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one block per call;
- ``llama3_json`` (Llama 3.1+): the message is ``{"name": ..., "parameters": {...}}``, calls separated by ``;``,
  optionally after ``<|python_tag|>``;
- ``mistral``: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]``.

A template that does not mention tools still gets them: ``prompt_messages`` describes the tools in a
system message in the format's words (Hermes's), writes earlier calls into assistant messages and hands
tool results back in user messages, so any chat model can drive a tool loop.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Optional

TOOL_FORMATS = ("hermes", "llama3_json", "mistral")


def new_call_id() -> str:
    """An OpenAI-style tool call id (``call_`` and 24 hex digits)."""
    return "call_" + secrets.token_hex(12)


@dataclass(frozen=True)
class ToolFormat:
    """How one family of models writes tool calls."""

    name: str
    start: str  # marker before a call (or before the list of calls); "" when calls start with their JSON
    end: str  # marker after a call ("" when none)
    arguments_key: str  # "arguments" or "parameters"
    separator: str  # between two calls
    listed: bool = False  # the calls are one JSON list after ``start`` (mistral)

    def render_calls(self, calls: list[dict[str, Any]]) -> str:
        """Earlier calls ({"name", "arguments" (JSON text)}) written the way this format writes them."""
        bodies = [json.dumps({"name": c["name"], self.arguments_key: _as_json(c.get("arguments"))}) for c in calls]
        if self.listed:
            return self.start + "[" + ", ".join(bodies) + "]"
        return self.separator.join(f"{self.start}{body}{self.end}" for body in bodies)

    def grammar(self, tools: list[dict[str, Any]], parallel: bool, answer: Optional[dict[str, Any]] = None) -> str:
        """A Lark grammar (llguidance's dialect) whose every sentence is one call (or, with ``parallel``,
        several) of one of ``tools`` with arguments valid for its JSON schema; or, when ``answer`` (a JSON
        schema) is given, such calls or a JSON answer that satisfies it."""
        variants = [
            {
                "type": "object",
                "properties": {"name": {"const": t.get("function", t)["name"]}, self.arguments_key: _schema_of(t)},
                "required": ["name", self.arguments_key],
                "additionalProperties": False,
            }
            for t in tools
        ]
        schema = {"anyOf": variants} if len(variants) > 1 else variants[0]
        rules = ["body: %json " + _compact_schema(schema)]
        if self.listed:
            more = ' (", " body)*' if parallel else ""
            rules.append(f'calls: {_lark_string(self.start)} "[" body{more} "]"')
        else:
            rules.append(
                f"call: {_lark_string(self.start)} body {_lark_string(self.end)}"
                if (self.start or self.end)
                else "call: body"
            )
            rules.append(f"calls: call ({_lark_string(self.separator)} call)*" if parallel else "calls: call")
        if answer is not None:
            rules += ["start: calls | answer", "answer: %json " + _compact_schema(answer)]
        else:
            rules.append("start: calls")
        return "\n".join(rules)


TOOL_FORMAT_BY_NAME = {
    "hermes": ToolFormat("hermes", "<tool_call>\n", "\n</tool_call>", "arguments", "\n"),
    "llama3_json": ToolFormat("llama3_json", "", "", "parameters", "; "),
    "mistral": ToolFormat("mistral", "[TOOL_CALLS]", "", "arguments", ", ", listed=True),
}


def tool_format(name: Optional[str] = None, chat_template: Optional[str] = None) -> ToolFormat:
    """The format named (``--tool-call-parser``), else the one the chat template writes, else Hermes."""
    if name:
        if name not in TOOL_FORMAT_BY_NAME:
            raise ValueError(f"unknown tool call parser {name!r}; choose one of {', '.join(TOOL_FORMATS)}")
        return TOOL_FORMAT_BY_NAME[name]
    source = chat_template or ""
    if "[TOOL_CALLS]" in source:
        return TOOL_FORMAT_BY_NAME["mistral"]
    if "<|python_tag|>" in source or ("ipython" in source and '"parameters"' in source):
        return TOOL_FORMAT_BY_NAME["llama3_json"]
    return TOOL_FORMAT_BY_NAME["hermes"]


def template_takes_tools(chat_template: Optional[str]) -> bool:
    """Whether a chat template renders a ``tools`` list (else ``prompt_messages`` writes them in)."""
    return bool(chat_template) and re.search(r"\btools\b", chat_template or "") is not None


# ---------------------------------------------------------------------------------------------- prompts
_PREAMBLE = (
    "You are a function calling AI model. You may call one or more functions to assist with the user query. "
    "Don't make assumptions about what values to plug into functions. Here are the available tools:\n"
    "<tools>\n{tools}\n</tools>\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n"
    '<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


def prompt_messages(
    messages: list[dict[str, Any]], tools: Optional[list[dict[str, Any]]], fmt: ToolFormat, template_tools: bool
) -> tuple[list[dict[str, Any]], Optional[list[dict[str, Any]]]]:
    """(messages, tools) for the chat template: as they are when the template renders tools itself; else
    the tools described in the system message, earlier calls written into assistant messages in ``fmt``
    and tool results handed back in user messages (consecutive results joined)."""
    if template_tools:
        return messages, tools
    out: list[dict[str, Any]] = []
    for message in messages:
        message = dict(message)
        if message.get("tool_calls"):
            calls = [
                {"name": c["function"]["name"], "arguments": c["function"].get("arguments")}
                for c in message.pop("tool_calls")
            ]
            message["content"] = ((message.get("content") or "") + "\n" + fmt.render_calls(calls)).strip()
        if message["role"] == "tool":
            response = f"<tool_response>\n{message.get('content') or ''}\n</tool_response>"
            if out and out[-1]["role"] == "user" and out[-1].get("content", "").startswith("<tool_response>"):
                out[-1]["content"] += "\n" + response
            else:
                out.append({"role": "user", "content": response})
            continue
        message.pop("tool_call_id", None)
        out.append(message)
    if tools:
        described = "\n".join(json.dumps(t.get("function", t)) for t in tools)
        preamble = _PREAMBLE.format(tools=described)
        if out and out[0]["role"] in ("system", "developer"):
            out[0] = {**out[0], "role": "system", "content": f"{out[0].get('content') or ''}\n\n{preamble}".strip()}
        else:
            out.insert(0, {"role": "system", "content": preamble})
    return out, None


# ---------------------------------------------------------------------------------------------- parsing
@dataclass
class ParsedCall:
    """A tool call being parsed: its id, name, and the arguments text streamed so far."""

    index: int
    id: str = field(default_factory=new_call_id)
    name: Optional[str] = None
    arguments: str = ""
    done: bool = False


@dataclass
class ToolEvent:
    """What a piece of output turned into: ``content`` text, a call's start (``name`` set), or more of a
    call's ``arguments``."""

    content: str = ""
    call: Optional[ParsedCall] = None
    name: Optional[str] = None
    arguments: str = ""


class ToolCallParser:
    """Turns a model's streamed output into content and tool calls, as OpenAI streams them: a call's id
    and name first, then its arguments in pieces. Text before the first call is content; text that may
    begin a call is held back until it is known not to. Output that looked like a call but is not one is
    given back as content at the end."""

    def __init__(self, fmt: ToolFormat):
        self.fmt = fmt
        self.calls: list[ParsedCall] = []
        self._pending = ""  # text held back (a possible start marker) or being parsed as calls
        self._in_calls = False
        self._scanner: Optional[_ObjectScanner] = None
        self._raw = ""  # everything since the calls began, to give back if they do not parse

    def feed(self, text: str) -> list[ToolEvent]:
        """Events for the next piece of output."""
        self._pending += text
        events: list[ToolEvent] = []
        if not self._in_calls:
            start = self._call_start(self._pending)
            if start is None:
                keep = _partial_marker(self._pending, self._starts())
                content, self._pending = (
                    self._pending[: len(self._pending) - keep],
                    self._pending[len(self._pending) - keep :],
                )
                return [ToolEvent(content=content)] if content else []
            if start > 0:
                events.append(ToolEvent(content=self._pending[:start].rstrip() if start else ""))
            self._pending = self._pending[start:]
            self._in_calls = True
        events += self._parse_calls()
        return [e for e in events if e.content or e.call is not None]

    def finish(self) -> list[ToolEvent]:
        """Events for the end of the output: held-back text, or what began like a call but never named
        one, as content. A call cut short (the output hit its limit) stays a call with the arguments so
        far, as OpenAI reports one cut by max_tokens."""
        if not self._in_calls:
            text, self._pending = self._pending, ""
            return [ToolEvent(content=text)] if text else []
        self.calls = [c for c in self.calls if c.name is not None]
        if not self.calls:
            text = self._raw + self._pending
            self._pending, self._raw = "", ""
            return [ToolEvent(content=text)] if text else []
        return []

    def _starts(self) -> list[str]:
        return [self.fmt.start.strip()] if self.fmt.start else ["{", "<|python_tag|>"]

    def _call_start(self, text: str) -> Optional[int]:
        """Where calls begin in ``text`` (None while they do not)."""
        if self.fmt.start:
            index = text.find(self.fmt.start.strip())
            return None if index < 0 else index
        stripped = text.lstrip()
        if stripped.startswith("<|python_tag|>") or stripped.startswith("{"):
            return len(text) - len(stripped)  # llama3_json: the message itself is the call
        return None

    def _parse_calls(self) -> list[ToolEvent]:
        events: list[ToolEvent] = []
        while True:
            if self._scanner is None:
                body = self._body_start()
                if body is None:
                    return events
                self._scanner = _ObjectScanner(self.fmt.arguments_key)
                self.calls.append(ParsedCall(len(self.calls)))
            call = self.calls[-1]
            taken = self._scanner.feed(self._pending)
            self._raw += self._pending[:taken]
            self._pending = self._pending[taken:]
            scanner = self._scanner
            if scanner.name is not None and call.name is None:
                call.name = scanner.name
                events.append(ToolEvent(call=call, name=call.name))
            if call.name is not None:
                arguments = scanner.final_arguments() if scanner.complete else scanner.arguments_text()
                if len(arguments) > len(call.arguments) and arguments.startswith(call.arguments):
                    events.append(ToolEvent(call=call, arguments=arguments[len(call.arguments) :]))
                    call.arguments = arguments
            if not scanner.complete:
                return events
            call.done = call.name is not None
            self._scanner = None

    def _body_start(self) -> Optional[int]:
        """Drop what comes before the next call's JSON object (markers, separators); None until it starts."""
        index = self._pending.find("{")
        if index < 0:
            return None
        self._raw += self._pending[:index]
        self._pending = self._pending[index:]
        return 0


class _ObjectScanner:
    """Follows one JSON object as it streams: the value of ``"name"`` once complete, and where the
    arguments value starts and (once complete) ends."""

    def __init__(self, arguments_key: str):
        self.arguments_keys = (arguments_key, "arguments", "parameters")
        self.text = ""
        self.depth = 0
        self.in_string = False
        self.escaped = False
        self.complete = False
        self.name: Optional[str] = None
        self._key: Optional[str] = None
        self._string_start = -1
        self._value_start = -1  # start of the current top-level value
        self._arguments_span: Optional[list[int]] = None  # [start, end or -1]

    def feed(self, text: str) -> int:
        """Consume characters of ``text`` up to the object's end; how many were consumed."""
        for i, char in enumerate(text):
            position = len(self.text)
            self.text += char
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
                    self._string_ended(position)
                continue
            if char == '"':
                self.in_string = True
                self._string_start = position
                if self.depth == 1 and self._key is not None and self._value_start < 0:
                    self._value_start = position
            elif char in "{[":
                if self.depth == 1 and self._key is not None and self._value_start < 0:
                    self._value_start = position
                    self._begin_value(position)
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth == 1:
                    self._end_value(position + 1)
                if self.depth == 0:
                    self._end_value(position)
                    self.complete = True
                    return i + 1
            elif self.depth == 1 and char in ",":
                self._end_value(position)
                self._key = None
            elif self.depth == 1 and char not in " \t\r\n:" and self._key is not None and self._value_start < 0:
                self._value_start = position  # a number, true, false or null
                self._begin_value(position)
        return len(text)

    def _string_ended(self, position: int) -> None:
        if self.depth != 1:
            return
        value = self.text[self._string_start : position + 1]
        if self._key is None:
            self._key = json.loads(value)
        elif self._value_start == self._string_start:
            if self._key == "name":
                self.name = json.loads(value)
            self._begin_value(self._string_start)
            self._end_value(position + 1)

    def _begin_value(self, position: int) -> None:
        if self._key in self.arguments_keys and self._arguments_span is None:
            self._arguments_span = [position, -1]

    def _end_value(self, end: int) -> None:
        if (
            self._value_start >= 0
            and self._arguments_span is not None
            and self._arguments_span[1] < 0
            and self._arguments_span[0] == self._value_start
        ):
            self._arguments_span[1] = end
        if self._value_start >= 0:
            self._value_start = -1

    def arguments_text(self) -> str:
        """The arguments value's text so far: an object's as it streams ("" for a JSON-encoded string
        until it is complete: ``final_arguments`` decodes it)."""
        span = self._arguments_span
        if span is None:
            return ""
        text = self.text[span[0] : span[1]] if span[1] >= 0 else self.text[span[0] :]
        return "" if text.startswith('"') else text.rstrip()

    def final_arguments(self) -> str:
        """The complete arguments as OpenAI sends them: a JSON object's text ("{}" when there were none)."""
        span = self._arguments_span
        text = self.text[span[0] : span[1]].strip() if span is not None and span[1] >= 0 else ""
        if text.startswith('"'):
            return str(json.loads(text))  # arguments written as a JSON-encoded string
        return text or "{}"


def parse_tool_calls(text: str, fmt: ToolFormat) -> tuple[str, list[ParsedCall]]:
    """(content, calls) of a complete output (a call cut short included: see ``ToolCallParser.finish``)."""
    parser = ToolCallParser(fmt)
    content = "".join(e.content for e in parser.feed(text) + parser.finish())
    return content, parser.calls


def _partial_marker(text: str, markers: list[str]) -> int:
    """Length of the longest end of ``text`` that is a proper prefix of one of ``markers``."""
    best = 0
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text)), best, -1):
            if text.endswith(marker[:n]):
                best = n
                break
    return best


def _schema_of(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function", tool)
    return function.get("parameters") or {"type": "object"}


def _as_json(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments or "{}")
        except json.JSONDecodeError:
            return arguments
    return arguments if arguments is not None else {}


def _compact_schema(schema: dict[str, Any]) -> str:
    """A JSON schema for llguidance's ``%json`` with no free whitespace (a model cannot pad forever)."""
    return json.dumps({**schema, "x-guidance": {"whitespace_flexible": False}})


def _lark_string(text: str) -> str:
    return json.dumps(text) if text else '""'
