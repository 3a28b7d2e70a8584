"""Build a complete, wire-valid Responses event stream from what an agent yields.

Agents usually yield only text deltas and ``response.output_item.done`` events (MLflow's convention).
The official ``openai`` client's stream helpers need the whole sequence: ``response.created``,
``output_item.added`` / ``content_part.added`` before deltas, ``*.done`` after, sequence numbers and
indexes, then ``response.completed`` with every output item. This class fills in what is missing.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from servelm.agents.ids import new_id


class ResponsesStreamBuilder:
    """Stateful builder of one Responses stream; each method returns the events to send, in order."""

    def __init__(self, model: str, request_fields: Optional[dict[str, Any]] = None):
        self.response_id = new_id("resp")
        self.model = model
        self.created_at = time.time()
        self.request_fields = request_fields or {}
        self.items: list[dict[str, Any]] = []
        self._index: dict[str, int] = {}
        self._open_text: dict[str, str] = {}
        self._open_calls: dict[str, str] = {}
        self._logprobs: dict[str, list[dict[str, Any]]] = {}
        self._seq = 0
        self.custom_outputs: Optional[dict[str, Any]] = None

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def response(self, status: str, **extra: Any) -> dict[str, Any]:
        """The response object as it stands (used in created / completed / failed events)."""
        body = {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "model": self.model,
            "output": [dict(i) for i in self.items],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "error": None,
            "incomplete_details": None,
            **self.request_fields,
            **extra,
        }
        if self.custom_outputs is not None:
            body["custom_outputs"] = self.custom_outputs
        return body

    def start(self) -> list[dict[str, Any]]:
        """``response.created`` and ``response.in_progress``."""
        return [
            self._event("response.created", response=self.response("in_progress")),
            self._event("response.in_progress", response=self.response("in_progress")),
        ]

    def _add_item(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        item_id = item.setdefault("id", new_id("item"))
        self._index[item_id] = len(self.items)
        self.items.append(item)
        return [self._event("response.output_item.added", output_index=self._index[item_id], item=dict(item))]

    def text_delta(
        self, item_id: str, delta: str, logprobs: Optional[list[dict[str, Any]]] = None
    ) -> list[dict[str, Any]]:
        """Events for a piece of assistant text (opening the message item on its first piece); ``logprobs``
        are the piece's token log-probabilities (kept for the final text part too)."""
        events: list[dict[str, Any]] = []
        if item_id not in self._index:
            events += self._add_item(
                {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
            )
            events.append(
                self._event(
                    "response.content_part.added",
                    item_id=item_id,
                    output_index=self._index[item_id],
                    content_index=0,
                    part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                )
            )
            self._open_text[item_id] = ""
            self._logprobs[item_id] = []
        if item_id not in self._open_text:
            return events  # the item was already completed: a late delta is dropped
        self._open_text[item_id] += delta
        self._logprobs[item_id] += logprobs or []
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=item_id,
                output_index=self._index[item_id],
                content_index=0,
                delta=delta,
                logprobs=logprobs or [],
            )
        )
        return events

    def call_added(self, item_id: str, call_id: str, name: str) -> list[dict[str, Any]]:
        """Events opening a function call item whose arguments stream next."""
        self._open_calls[item_id] = ""
        return self._add_item(
            {
                "id": item_id,
                "type": "function_call",
                "call_id": call_id,
                "name": name,
                "arguments": "",
                "status": "in_progress",
            }
        )

    def call_arguments(self, item_id: str, delta: str) -> list[dict[str, Any]]:
        """A piece of an open function call's arguments."""
        self._open_calls[item_id] += delta
        return [
            self._event(
                "response.function_call_arguments.delta",
                item_id=item_id,
                output_index=self._index[item_id],
                delta=delta,
            )
        ]

    def call_done(self, item_id: str) -> list[dict[str, Any]]:
        """Events closing a function call item: its whole arguments, then the item."""
        arguments = self._open_calls.pop(item_id)
        index = self._index[item_id]
        item = {**self.items[index], "arguments": arguments, "status": "completed"}
        self.items[index] = item
        return [
            self._event(
                "response.function_call_arguments.done",
                item_id=item_id,
                output_index=index,
                name=item["name"],
                arguments=arguments,
            ),
            self._event("response.output_item.done", output_index=index, item=dict(item)),
        ]

    def item_added(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """Events for an item the agent announced itself (a message opens for text deltas)."""
        item_id = item.get("id")
        if item_id is not None and item_id in self._index:
            return []
        if item.get("type") == "message":
            return self.text_delta(item_id or new_id("msg"), "")[:-1] if item_id else []
        return self._add_item(dict(item))

    def item_done(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """Events completing an item (adding it first when it was never opened)."""
        item = dict(item)
        item.setdefault("status", "completed")
        events: list[dict[str, Any]] = []
        item_id = item.get("id")
        if item_id is None or item_id not in self._index:
            events += self._add_item(item)
            item_id = item["id"]
        index = self._index[item_id]
        if item_id in self._open_text:
            text = self._open_text.pop(item_id)
            final_text = _item_text(item)
            text = final_text if final_text is not None else text
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": self._logprobs.pop(item_id, [])}
            events.append(
                self._event(
                    "response.output_text.done",
                    item_id=item_id,
                    output_index=index,
                    content_index=0,
                    text=text,
                    logprobs=[],
                )
            )
            events.append(
                self._event(
                    "response.content_part.done", item_id=item_id, output_index=index, content_index=0, part=part
                )
            )
            if item.get("type") == "message" and not item.get("content"):
                item["content"] = [part]
        self.items[index] = item
        events.append(self._event("response.output_item.done", output_index=index, item=dict(item)))
        return events

    def passthrough(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """Another event of the agent's (reasoning deltas, custom types): numbered and indexed."""
        fields = {k: v for k, v in event.items() if k not in ("type", "sequence_number")}
        if "item_id" in fields and fields["item_id"] in self._index:
            fields.setdefault("output_index", self._index[fields["item_id"]])
        return [self._event(event["type"], **fields)]

    def finish(self, usage: Optional[dict[str, Any]] = None, incomplete: Optional[str] = None) -> list[dict[str, Any]]:
        """Close items left open, then ``response.completed`` (``response.incomplete`` with the reason, e.g.
        "max_output_tokens", when the answer was cut)."""
        events: list[dict[str, Any]] = []
        for item_id in list(self._open_calls):
            events += self.call_done(item_id)
        for item_id in list(self._open_text):
            item = dict(self.items[self._index[item_id]])
            item["status"] = "incomplete" if incomplete else "completed"
            events += self.item_done(item)
        extra: dict[str, Any] = {"usage": usage} if usage else {}
        if incomplete:
            events.append(
                self._event(
                    "response.incomplete",
                    response=self.response("incomplete", incomplete_details={"reason": incomplete}, **extra),
                )
            )
        else:
            events.append(self._event("response.completed", response=self.response("completed", **extra)))
        return events


def _item_text(item: dict[str, Any]) -> Optional[str]:
    content = item.get("content")
    if not content:
        return None
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))
