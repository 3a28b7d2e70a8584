"""Admission control: a bounded running set and a bounded waiting queue.

A request past both bounds is refused at once with 429 and Retry-After, before any response bytes.
"""

from __future__ import annotations

import asyncio
import time

from .errors import APIError
from .metrics import ModelMetrics, ServerMetrics


class Admission:
    """At most ``max_concurrency`` requests run; at most ``max_queue`` wait; the rest get 429. One per model:
    the server's gauges count every model's requests, ``model`` (vLLM's names) this model's."""

    def __init__(self, max_concurrency: int, max_queue: int, metrics: ServerMetrics, model: ModelMetrics):
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.metrics = metrics
        self.model = model
        self._slots = asyncio.Semaphore(max_concurrency)
        self.running = 0
        self.waiting = 0

    async def acquire(self) -> float:
        """Take a running slot (waiting in the queue if needed); returns seconds spent queued."""
        start = time.perf_counter()
        if self._slots.locked():
            if self.waiting >= self.max_queue:
                raise APIError(
                    429,
                    f"server is at capacity ({self.running} running, {self.waiting} waiting); retry shortly",
                    code="server_overloaded",
                    headers={"Retry-After": "1"},
                )
            self.waiting += 1
            self.metrics.waiting.inc()
            self.model.waiting.set(self.waiting)
            try:
                await self._slots.acquire()
            finally:
                self.waiting -= 1
                self.metrics.waiting.dec()
                self.model.waiting.set(self.waiting)
        else:
            await self._slots.acquire()
        self.running += 1
        self.metrics.running.inc()
        self.model.running.set(self.running)
        queued = time.perf_counter() - start  # seconds
        self.metrics.queue_time.observe(queued)
        return queued

    def release(self) -> None:
        """Give the slot back (exactly once per successful acquire)."""
        self.running -= 1
        self.metrics.running.dec()
        self.model.running.set(self.running)
        self._slots.release()
