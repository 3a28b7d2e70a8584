"""The generation engine: a flavor's batcher driven by one engine thread that owns it.

The batcher is built on that thread (onnxruntime-genai's Engine may only be used from the thread that
made it). Requests arrive from the event loop, join the running batch between decode steps, stream their text
back through asyncio queues (one hand-off per step, not per token), and are aborted the moment their
client goes away. The thread sleeps when there is no work.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from servelm.flavors.generation import SamplingParams

log = logging.getLogger("servelm.engine")


@dataclass
class Delta:
    """One piece of a sequence's output as the engine produced it."""

    text: str
    finished: bool
    finish_reason: Optional[str] = None
    completion_tokens: int = 0
    error: Optional[str] = None


@dataclass
class EngineRequest:
    """A submitted sequence: its queue of Deltas on the caller's loop, and its batcher sequence."""

    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    queue: "asyncio.Queue[Delta]" = field(default_factory=asyncio.Queue)
    seq: Any = None  # the batcher's sequence
    aborted: bool = False


class GenerationEngine:
    """Owns a batcher on one thread; ``submit`` / ``abort`` are safe to call from the event loop.

    ``make_batcher`` is called on the engine thread, again after a failed step (a fresh batcher).
    """

    def __init__(self, make_batcher: Callable[[], Any], context_length: int, max_num_seqs: int = 64, on_step: Optional[Callable[[int], None]] = None):
        self.make_batcher = make_batcher
        self.batcher: Any = None
        self.context_length = context_length
        self.max_num_seqs = max_num_seqs
        self.on_step = on_step
        self._inbox: deque[EngineRequest] = deque()
        self._by_seq: dict[int, EngineRequest] = {}
        self._mailboxes: dict[asyncio.AbstractEventLoop, _Mailbox] = {}
        self._wake = threading.Event()
        self._ready = threading.Event()
        self._start_error: Optional[BaseException] = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="servelm-engine", daemon=True)

    def start(self) -> None:
        """Start the engine thread; raises what building the batcher raised."""
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise self._start_error

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=10)

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> EngineRequest:
        """Queue a sequence; read its Deltas from ``request.queue``."""
        request = EngineRequest(prompt_ids, params, asyncio.get_running_loop())
        self._inbox.append(request)
        self._wake.set()
        return request

    def abort(self, request: EngineRequest) -> None:
        """Free the request's row at the next step (or drop it before it starts)."""
        request.aborted = True
        self._wake.set()

    def _post(self, loop: asyncio.AbstractEventLoop, items: list[tuple[EngineRequest, Delta]]) -> None:
        mailbox = self._mailboxes.get(loop)
        if mailbox is None:
            mailbox = self._mailboxes[loop] = _Mailbox(loop)
        mailbox.post(items)

    # ------------------------------------------------------------------ engine thread
    def _run(self) -> None:
        try:
            self.batcher = self.make_batcher()
        except BaseException as exc:  # reported by start()
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        while not self._stopped:
            self._admit()
            if not self.batcher.has_work():
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            try:
                outputs = self.batcher.step()
            except Exception as exc:  # a broken step fails its requests, not the server
                log.exception("engine step failed")
                self._fail_all(f"{type(exc).__name__}: {exc}")
                continue
            if self.on_step is not None:
                self.on_step(self.batcher.last_batch_size)
            deliveries: dict[asyncio.AbstractEventLoop, list[tuple[EngineRequest, Delta]]] = {}
            for out in outputs:
                request = self._by_seq.get(out.seq.seq_id)
                if request is None:
                    continue
                delta = Delta(out.text, out.finished, out.seq.finish_reason, len(out.seq.generated))
                deliveries.setdefault(request.loop, []).append((request, delta))
                if out.finished:
                    self._by_seq.pop(out.seq.seq_id, None)
            for loop, items in deliveries.items():
                self._post(loop, items)
            time.sleep(0)  # let the event loop take the GIL between steps: requests waiting to start, and deltas to send

    def _admit(self) -> None:
        for request in list(self._by_seq.values()):
            if request.aborted and request.seq is not None and not request.seq.aborted:
                self.batcher.abort(request.seq)
                self._by_seq.pop(request.seq.seq_id, None)
        while self._inbox:
            request = self._inbox.popleft()
            if request.aborted:
                continue
            try:
                request.seq = self.batcher.add(request.prompt_ids, request.params)
            except ValueError as exc:  # e.g. a prompt the model cannot take
                self._post(request.loop, [(request, Delta("", True, "error", error=str(exc)))])
                continue
            self._by_seq[request.seq.seq_id] = request

    def _fail_all(self, message: str) -> None:
        try:
            self.batcher = self.make_batcher()  # the old one's state is suspect: start clean
        except Exception:
            log.exception("could not rebuild the batcher after a failed step")
        for request in self._by_seq.values():
            self._post(request.loop, [(request, Delta("", True, "error", error=message))])
        self._by_seq.clear()


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
