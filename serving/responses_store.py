"""Stored responses, for ``previous_response_id`` and ``GET /v1/responses/{id}``.

Each stored response keeps the conversation that led to it (its input items, earlier turns included)
so a follow-up request that names it continues that conversation. The store is this server process's
memory, bounded (least recently used out first): nothing survives a restart, and with several workers
each has its own.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Optional


class ResponseStore:
    """Responses by id, with their conversations; at most ``capacity`` of them."""

    def __init__(self, capacity: int = 1000):
        self.capacity = capacity
        self._entries: OrderedDict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = OrderedDict()
        self._lock = threading.Lock()

    def save(self, response: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
        """Keep ``response`` and the input that produced it."""
        with self._lock:
            self._entries[response["id"]] = (response, input_items)
            self._entries.move_to_end(response["id"])
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def get(self, response_id: str) -> Optional[dict[str, Any]]:
        with self._lock:
            entry = self._entries.get(response_id)
            return entry[0] if entry is not None else None

    def input_items(self, response_id: str) -> Optional[list[dict[str, Any]]]:
        with self._lock:
            entry = self._entries.get(response_id)
            return entry[1] if entry is not None else None

    def conversation(self, response_id: str) -> Optional[list[dict[str, Any]]]:
        """The items a follow-up continues from: the response's input, then its output (None if unknown)."""
        with self._lock:
            entry = self._entries.get(response_id)
            if entry is None:
                return None
            self._entries.move_to_end(response_id)
            response, inputs = entry
            return inputs + [dict(item) for item in response.get("output") or []]

    def delete(self, response_id: str) -> bool:
        with self._lock:
            return self._entries.pop(response_id, None) is not None
