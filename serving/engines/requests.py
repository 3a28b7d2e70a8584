"""The event-loop side of the thread and process engines: open requests, and Deltas handed to the loop
that reads them (one hand-off per step, not per token)."""

from __future__ import annotations

import asyncio
import itertools
import threading
from dataclasses import dataclass, field
from typing import Optional

from servelm.flavors.engine import SamplingParams

from .base import Delta


@dataclass(eq=False)
class EngineRequest:
    """A submitted sequence (a ``RequestStream``): its id, and the queue of Deltas it streams to on the caller's
    loop."""

    rid: int
    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Delta] = field(default_factory=asyncio.Queue)
    aborted: bool = False
    scheduled_at: Optional[float] = None  # wall-clock seconds the engine gave it a batch row (from its first Delta)

    async def get(self) -> Delta:
        return await self.queue.get()

    def get_ready(self) -> list[Delta]:
        ready = []
        while not self.queue.empty():
            ready.append(self.queue.get_nowait())
        return ready


class RequestTable:
    """The caller's side of an engine: request ids, and Deltas handed to each request's event loop."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._open: dict[int, EngineRequest] = {}
        self._mailboxes: dict[asyncio.AbstractEventLoop, _Mailbox] = {}

    def new(self, prompt_ids: list[int], params: SamplingParams) -> EngineRequest:
        """A request on the running loop (call from that loop)."""
        request = EngineRequest(next(self._ids), prompt_ids, params, asyncio.get_running_loop())
        self._open[request.rid] = request
        return request

    def close(self, request: EngineRequest) -> bool:
        """Forget a request; whether it was still open (its sequence may still be running)."""
        request.aborted = True
        return self._open.pop(request.rid, None) is not None

    def deliver_here(self, items: list[tuple[int, Delta]]) -> None:
        """Put Deltas on their requests' queues; call on the loop the requests belong to."""
        for request, delta in self._take(items):
            request.queue.put_nowait(delta)

    def deliver(self, items: list[tuple[int, Delta]]) -> None:
        """Hand Deltas to their requests' loops (safe from any thread)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[EngineRequest, Delta]]] = {}
        for request, delta in self._take(items):
            by_loop.setdefault(request.loop, []).append((request, delta))
        for loop, deliveries in by_loop.items():
            mailbox = self._mailboxes.get(loop)
            if mailbox is None:
                mailbox = self._mailboxes[loop] = _Mailbox(loop)
            mailbox.post(deliveries)

    def _take(self, items: list[tuple[int, Delta]]) -> list[tuple[EngineRequest, Delta]]:
        """The open requests the Deltas belong to (closed ones dropped); finished requests are forgotten."""
        taken = []
        for rid, delta in items:
            request = self._open.get(rid)
            if request is None:
                continue
            if delta.finished:
                self._open.pop(rid, None)
            if delta.scheduled_at is not None:
                request.scheduled_at = delta.scheduled_at
            taken.append((request, delta))
        return taken

    def fail_all(self, message: str) -> None:
        """End every open request with an error."""
        self.deliver([(rid, Delta("", True, None, error=message)) for rid in list(self._open)])


class _Mailbox:
    """Deltas on their way to one event loop. At most one hand-off is scheduled at a time: while the
    loop is busy, later steps' deltas join the waiting batch instead of queueing more callbacks, so a
    loaded server wakes less often and streams several tokens per chunk (an idle one, one per step)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.items: list[tuple[EngineRequest, Delta]] = []
        self.lock = threading.Lock()
        self.scheduled = False

    def post(self, items: list[tuple[EngineRequest, Delta]]) -> None:
        with self.lock:
            self.items.extend(items)
            if self.scheduled:
                return
            self.scheduled = True
        try:
            self.loop.call_soon_threadsafe(self.flush)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def flush(self) -> None:
        with self.lock:
            items, self.items, self.scheduled = self.items, [], False
        _deliver(items)


def _deliver(items: list[tuple[EngineRequest, Delta]]) -> None:
    for request, delta in items:
        request.queue.put_nowait(delta)
