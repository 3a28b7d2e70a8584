"""The thread engine: a flavor's batcher driven by one engine thread of the server process.

The batcher is built on that thread (onnxruntime-genai's Engine may only be used from the thread that
made it). Requests arrive from the event loop, join the running batch between steps, stream their text
back through the request table (one hand-off per step, not per token), and are aborted the moment their
client goes away. The thread sleeps when there is no work. ``process.py`` runs the same driver in a
child process instead, for batchers whose per-step Python would otherwise share the server's GIL.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Optional

from servelm.flavors.engine import Batcher, SamplingParams

from .base import StepObserver
from .driver import IDLE_SECONDS, BatcherDriver
from .requests import EngineRequest, RequestTable


class ThreadEngine:
    """An ``Engine`` that owns a batcher on one thread of this process.

    ``make_batcher`` is called on the engine thread (again after a failed step: a fresh batcher).
    ``tokenizer`` makes the requests' text from the token ids the batcher produces, on the serving loop.
    """

    def __init__(
        self,
        make_batcher: Callable[[], Batcher],
        context_length: int,
        tokenizer: Any,
        on_step: Optional[StepObserver] = None,
    ):
        self.make_batcher = make_batcher
        self.driver: Optional[BatcherDriver] = None
        self.context_length = context_length
        self.on_step = on_step
        self.requests = RequestTable(tokenizer, self._stop_sequence)
        self._inbox: deque[tuple[str, Any]] = deque()  # ("add", EngineRequest) | ("abort", request id)
        self._wake = threading.Event()
        self._ready = threading.Event()
        self._start_error: Optional[BaseException] = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="servelm-engine", daemon=True)

    async def start(self) -> None:
        """Start the engine thread and wait (off the event loop) for the batcher; raises what building it raised."""
        self._thread.start()
        await asyncio.to_thread(self._ready.wait)
        if self._start_error is not None:
            raise self._start_error

    async def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        await asyncio.to_thread(self._thread.join, 10)
        self.requests.fail_all("the engine has stopped")

    def health_error(self) -> Optional[str]:
        return None if self._thread.is_alive() else "the engine thread has stopped"

    def has_work(self) -> bool:
        """Whether the batcher holds any sequence (running, waiting, or aborted but not yet freed)."""
        return self.driver is not None and self.driver.has_work()

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> EngineRequest:
        """Queue a sequence; read its Deltas from the returned stream."""
        request = self.requests.new(prompt_ids, params)
        self._inbox.append(("add", request))
        self._wake.set()
        return request

    def abort(self, stream: Any) -> None:
        """Free the request's row at the next step (or drop it before it starts)."""
        if self.requests.close(stream):
            self._stop_sequence(stream.rid)

    def _stop_sequence(self, rid: int) -> None:
        """Free request ``rid``'s sequence at the next step (its reader went away, or a stop string ended its text)."""
        self._inbox.append(("abort", rid))
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
                woken = self._wake.wait(timeout=IDLE_SECONDS)
                self._wake.clear()
                if not woken and not self._inbox and not driver.has_work():
                    driver.idle()
                continue
            batch, items = driver.step()
            if self.on_step is not None and batch:
                self.on_step(batch)
            self.requests.deliver(items)
            time.sleep(
                0
            )  # let the event loop take the GIL between steps: requests waiting to start, and deltas to send

    def _take_inbox(self, driver: BatcherDriver) -> None:
        while self._inbox:
            kind, item = self._inbox.popleft()
            if kind == "abort":
                driver.abort(item)
            elif not item.aborted:
                refused = driver.add(item.rid, item.prompt_ids, item.params)
                if refused is not None:
                    self.requests.deliver([(item.rid, refused)])
