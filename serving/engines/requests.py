"""The event-loop side of the thread and process engines: open requests, and Deltas handed to the loop
that reads them (one hand-off per step, not per token).

The engines move token ids; each request's text is made here, on the loop that reads it (incremental
detokenization and stop strings, ``SequenceText``), as vLLM's output processor does in its serving process. A
request whose text reaches a stop string ends there, and its sequence is aborted in the engine.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from servelm.flavors.engine import SamplingParams
from servelm.flavors.generation import SequenceText

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
    output: Optional[SequenceText] = None  # its text so far, made from the engine's token ids
    ended: bool = False  # its last Delta was delivered (a stop string may end it before the engine does)

    async def get(self) -> Delta:
        return await self.queue.get()

    def get_ready(self) -> list[Delta]:
        ready = []
        while not self.queue.empty():
            ready.append(self.queue.get_nowait())
        return ready


class RequestTable:
    """The caller's side of an engine: request ids, and Deltas handed to each request's event loop.

    ``tokenizer`` turns the engine's token ids into text; ``stop_sequence(rid)`` is called (on the request's
    loop) when a stop string ends a request the engine is still generating, to abort it there.
    """

    def __init__(self, tokenizer: Any, stop_sequence: Callable[[int], None]) -> None:
        self.tokenizer = tokenizer
        self.stop_sequence = stop_sequence
        self._ids = itertools.count(1)
        self._open: dict[int, EngineRequest] = {}
        self._mailboxes: dict[asyncio.AbstractEventLoop, _Mailbox] = {}

    def new(self, prompt_ids: list[int], params: SamplingParams) -> EngineRequest:
        """A request on the running loop (call from that loop)."""
        request = EngineRequest(next(self._ids), prompt_ids, params, asyncio.get_running_loop())
        request.output = SequenceText(self.tokenizer, params.stop)
        self._open[request.rid] = request
        return request

    def close(self, request: EngineRequest) -> bool:
        """Forget a request; whether it was still open (its sequence may still be running)."""
        request.aborted = True
        return self._open.pop(request.rid, None) is not None

    def deliver_here(self, items: list[tuple[int, Delta]]) -> None:
        """Put Deltas on their requests' queues; call on the loop the requests belong to."""
        self._deliver(self._take(items))

    def deliver(self, items: list[tuple[int, Delta]]) -> None:
        """Hand Deltas to their requests' loops (safe from any thread)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[EngineRequest, Delta]]] = {}
        for request, delta in self._take(items):
            by_loop.setdefault(request.loop, []).append((request, delta))
        for loop, deliveries in by_loop.items():
            mailbox = self._mailboxes.get(loop)
            if mailbox is None:
                mailbox = self._mailboxes[loop] = _Mailbox(loop, self._deliver)
            mailbox.post(deliveries)

    def _deliver(self, items: list[tuple[EngineRequest, Delta]]) -> None:
        """On the requests' loop: make each Delta's text from its token ids and queue it. A stop string ends
        the request with that Delta (``finish_reason`` "stop") and stops its sequence in the engine; Deltas
        after a request's last are dropped."""
        for request, delta in items:
            if request.ended:
                continue
            output = request.output
            if delta.token_ids is not None and output is not None:
                delta.text, stopped = output.step(delta.token_ids, delta.finished and delta.error is None)
                if stopped:
                    if not delta.finished:
                        delta.finished, delta.finish_reason = True, "stop"
                        if self._open.pop(request.rid, None) is not None:
                            self.stop_sequence(request.rid)
                    elif delta.error is None:
                        delta.finish_reason = "stop"
            request.ended = delta.finished
            request.queue.put_nowait(delta)

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

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[list[tuple[EngineRequest, Delta]]], None]):
        self.loop = loop
        self.deliver = deliver
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
        self.deliver(items)
