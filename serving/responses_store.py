"""Stored responses, for ``previous_response_id`` and ``GET /v1/responses/{id}``.

Each stored response keeps the conversation that led to it (its input items, earlier turns included)
so a follow-up request that names it continues that conversation. The store is this server process's
memory, bounded in count and bytes (least recently used out first): nothing survives a restart, and with several workers
each has its own.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any, Optional


class ResponseStore:
    """Responses by id, with their conversations; at most ``capacity`` of them and ``max_bytes`` of their JSON
    (a few large conversations cannot take the server's memory; one larger than the whole bound is not kept)."""

    def __init__(self, capacity: int = 1000, max_bytes: int = 256 * 1024 * 1024):
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0  # the JSON size of what is kept
        self._entries: OrderedDict[str, tuple[dict[str, Any], list[dict[str, Any]], int]] = OrderedDict()
        self._lock = threading.Lock()

    def save(self, response: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
        """Keep ``response`` and the input that produced it (the least recently used go first)."""
        size = len(json.dumps([response, input_items], default=str))
        with self._lock:
            self.delete_locked(response["id"])
            if size > self.max_bytes:
                return
            self._entries[response["id"]] = (response, input_items, size)
            self.bytes += size
            while len(self._entries) > self.capacity or self.bytes > self.max_bytes:
                self.bytes -= self._entries.popitem(last=False)[1][2]

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
            response, inputs, _ = entry
            return inputs + [dict(item) for item in response.get("output") or []]

    def delete(self, response_id: str) -> bool:
        with self._lock:
            return self.delete_locked(response_id)

    def delete_locked(self, response_id: str) -> bool:
        entry = self._entries.pop(response_id, None)
        if entry is not None:
            self.bytes -= entry[2]
        return entry is not None
