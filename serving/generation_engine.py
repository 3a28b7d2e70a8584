"""The generation engine: a flavor's batcher driven by one engine thread that owns it.

The batcher is built on that thread (onnxruntime-genai's Engine may only be used from the thread that
made it). Requests arrive from the event loop, join the running batch between decode steps, stream their text
back through asyncio queues (one hand-off per step, not per token), and are aborted the moment their
client goes away. The thread sleeps when there is no work.

``BatcherDriver`` (the batcher side) and ``RequestTable`` (the event-loop side) are shared with
``engine_process.ProcessEngine``, which runs the same driver in a child process instead.
"""

from __future__ import annotations

import asyncio
import itertools
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


@dataclass(eq=False)
class EngineRequest:
    """A submitted sequence: its id, and the queue of Deltas it streams to on the caller's loop."""

    rid: int
    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    queue: "asyncio.Queue[Delta]" = field(default_factory=asyncio.Queue)
    aborted: bool = False


class BatcherDriver:
    """A batcher and the requests riding on it, keyed by request id: add, abort, and one step that
    returns each request's Delta. A step that raises fails the requests it held (not the server) and
    starts over with a fresh batcher. Used on whichever thread or process owns the batcher."""

    def __init__(self, make_batcher: Callable[[], Any]):
        self.make_batcher = make_batcher
        self.batcher = make_batcher()
        self._rids: dict[int, int] = {}  # batcher seq_id -> request id
        self._seqs: dict[int, Any] = {}  # request id -> batcher sequence

    def add(self, rid: int, prompt_ids: list[int], params: SamplingParams) -> Optional[Delta]:
        """Queue a request; a Delta with the error when the batcher refuses it (e.g. a prompt too long)."""
        try:
            seq = self.batcher.add(prompt_ids, params)
        except ValueError as exc:
            return Delta("", True, "error", error=str(exc))
        self._rids[seq.seq_id] = rid
        self._seqs[rid] = seq
        return None

    def abort(self, rid: int) -> None:
        """Free a request's row at the next step (nothing if it already finished)."""
        seq = self._seqs.pop(rid, None)
        if seq is not None:
            self._rids.pop(seq.seq_id, None)
            self.batcher.abort(seq)

    def has_work(self) -> bool:
        return bool(self.batcher.has_work())

    def step(self) -> tuple[int, list[tuple[int, Delta]]]:
        """One batcher step: (sequences in it, [(request id, Delta)])."""
        try:
            outputs = self.batcher.step()
        except Exception as exc:  # a broken step fails its requests, not the server
            log.exception("engine step failed")
            return 0, self.fail_all(f"{type(exc).__name__}: {exc}")
        items = []
        for out in outputs:
            rid = self._rids.get(out.seq.seq_id)
            if rid is None:
                continue
            items.append((rid, Delta(out.text, out.finished, out.seq.finish_reason, len(out.seq.generated))))
            if out.finished:
                del self._rids[out.seq.seq_id]
                self._seqs.pop(rid, None)
        return (self.batcher.last_batch_size if outputs else 0), items

    def fail_all(self, message: str) -> list[tuple[int, Delta]]:
        """End every request with an error and start a fresh batcher (the old one's state is suspect)."""
        failed = [(rid, Delta("", True, None, error=message)) for rid in self._seqs]
        self._rids.clear()
        self._seqs.clear()
        try:
            self.batcher = self.make_batcher()
        except Exception:
            log.exception("could not rebuild the batcher after a failed step")
        return failed


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
            taken.append((request, delta))
        return taken

    def fail_all(self, message: str) -> None:
        """End every open request with an error."""
        self.deliver([(rid, Delta("", True, None, error=message)) for rid in list(self._open)])


class GenerationEngine:
    """Owns a batcher on one thread of this process; ``submit`` / ``abort`` are safe to call from the event loop.

    ``make_batcher`` is called on the engine thread (again after a failed step: a fresh batcher).
    """

    def __init__(self, make_batcher: Callable[[], Any], context_length: int, max_num_seqs: int = 64, on_step: Optional[Callable[[int], None]] = None):
        self.make_batcher = make_batcher
        self.driver: Optional[BatcherDriver] = None
        self.context_length = context_length
        self.max_num_seqs = max_num_seqs
        self.on_step = on_step
        self.requests = RequestTable()
        self._inbox: deque[tuple[str, Any]] = deque()  # ("add", EngineRequest) | ("abort", request id)
        self._wake = threading.Event()
        self._ready = threading.Event()
        self._start_error: Optional[BaseException] = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="servelm-engine", daemon=True)

    def start(self) -> None:
        """Start the engine thread and wait for the batcher; raises what building it raised."""
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise self._start_error

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=10)

    def health_error(self) -> Optional[str]:
        return None if self._thread.is_alive() else "the engine thread has stopped"

    def has_work(self) -> bool:
        """Whether the batcher holds any sequence (running, waiting, or aborted but not yet freed)."""
        return self.driver is not None and self.driver.has_work()

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> EngineRequest:
        """Queue a sequence; read its Deltas from ``request.queue``."""
        request = self.requests.new(prompt_ids, params)
        self._inbox.append(("add", request))
        self._wake.set()
        return request

    def abort(self, request: EngineRequest) -> None:
        """Free the request's row at the next step (or drop it before it starts)."""
        if self.requests.close(request):
            self._inbox.append(("abort", request.rid))
            self._wake.set()

    # ------------------------------------------------------------------ engine thread
    def _run(self) -> None:
        try:
            self.driver = driver = BatcherDriver(self.make_batcher)
        except BaseException as exc:  # reported by start()
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        while not self._stopped:
            self._take_inbox(driver)
            if not driver.has_work():
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            batch, items = driver.step()
            if self.on_step is not None and batch:
                self.on_step(batch)
            self.requests.deliver(items)
            time.sleep(0)  # let the event loop take the GIL between steps: requests waiting to start, and deltas to send

    def _take_inbox(self, driver: BatcherDriver) -> None:
        while self._inbox:
            kind, item = self._inbox.popleft()
            if kind == "abort":
                driver.abort(item)
            elif not item.aborted:
                refused = driver.add(item.rid, item.prompt_ids, item.params)
                if refused is not None:
                    self.requests.deliver([(item.rid, refused)])


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
