"""The generation engine in a child process of its own (vLLM's engine-core split, for our batchers).

Why: the HTTP side (parsing, chat templates, SSE framing, making text from token ids) and the batcher's per-step
Python (the model's forward, sampling) both need the GIL, so on one process they take turns on one core however
many the machine has. Here the child owns the batcher (built there from a picklable factory: the model is loaded
in the child, never in the server process) and moves token ids only; the server process keeps the event loop and
makes the text (``requests.RequestTable``).

Two one-way pipes: requests go down as ("add", id, prompt ids, SamplingParams) / ("abort", id) / ("stop",),
written by a thread of their own from an unbounded queue, so the event loop never blocks on a full pipe (the
child may be blocked writing its steps, which only the event loop reads: writing on the loop could deadlock the
two processes); each step comes back as ("step", batch size, [(id, token ids, finished, finish_reason, tokens,
error, logprobs, scheduled at)], whether the batcher still holds sequences), read on the event loop itself
whenever the pipe is readable (no reader thread: a thread would have to win the GIL from a busy loop before every
hand-off). The child exits when the server process goes away (its request pipe reaches EOF). If the child dies,
every open request ends with an error, ``health_error`` says so, and a new child is started after a backoff (1,
2, 4 s); after more than ``MAX_RESTARTS`` deaths within ``RESTART_WINDOW`` it gives up and tells the server
(``on_give_up``), which exits non-zero for its orchestrator to restart it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Optional

from servelm.flavors.engine import Batcher, SamplingParams
from servelm.flavors.engine.sample.choice import TokenChoice

from ..errors import APIError
from ..logs import configure_logging
from .base import Delta, StepObserver
from .driver import IDLE_SECONDS, BatcherDriver
from .requests import EngineRequest, RequestTable

log = logging.getLogger("servelm.engine")

MAX_RESTARTS = 3  # deaths of the engine process within RESTART_WINDOW that are restarted; one more and the server exits
RESTART_WINDOW = 300.0  # seconds


class ProcessEngine:
    """An ``Engine`` whose batcher runs in a child process.

    ``make_batcher`` must be picklable (a module-level function or a functools.partial of one): it is
    called in the child. The child sends token ids; ``tokenizer`` makes their text here, on the serving loop.
    """

    def __init__(
        self,
        make_batcher: Callable[[], Batcher],
        context_length: int,
        tokenizer: Any,
        on_step: Optional[StepObserver] = None,
    ):
        self.make_batcher = make_batcher
        self.context_length = context_length
        self.on_step = on_step
        self.requests = RequestTable(tokenizer, self._stop_sequence)
        self._process: Any = None
        self._to_child: Optional[Connection] = None
        self._from_child: Optional[Connection] = None
        self._outbox: queue.SimpleQueue[Optional[tuple[Any, ...]]] = queue.SimpleQueue()  # to the writer thread
        self._writer: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._dead: Optional[str] = None
        self._deaths: list[float] = []  # monotonic times the child died, within RESTART_WINDOW
        self._restarting: Optional[asyncio.Task[None]] = None
        #: called once the child has died more than MAX_RESTARTS times within RESTART_WINDOW (the server exits)
        self.on_give_up: Optional[Callable[[str], None]] = None
        #: called after each restart (the restart counter)
        self.on_restart: Optional[Callable[[], None]] = None
        self._stopping = False
        self._busy = False  # the child's batcher held sequences after its last step

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the child, wait (off the event loop) until its batcher is built, then read its steps on
        this event loop; raises the child's error."""
        await asyncio.to_thread(self._start)
        assert self._from_child is not None
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._from_child.fileno(), self._read)

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")  # a fork would copy the server's threads and locks
        requests_in, requests_out = context.Pipe(duplex=False)
        outputs_in, outputs_out = context.Pipe(duplex=False)
        level = logging.getLevelName(logging.getLogger("servelm").getEffectiveLevel()).lower()
        self._process = context.Process(
            target=engine_main,
            args=(self.make_batcher, requests_in, outputs_out, level),
            name="servelm-engine",
            daemon=True,
        )  # never outlives the server process, however that one ends
        self._process.start()
        requests_in.close()
        outputs_out.close()
        self._to_child, self._from_child = requests_out, outputs_in
        while not outputs_in.poll(0.5):
            if not self._process.is_alive():
                raise RuntimeError(
                    f"the engine process exited with code {self._process.exitcode} while loading the model"
                )
        try:
            kind, detail = outputs_in.recv()
        except EOFError:
            raise RuntimeError(
                f"the engine process exited while loading the model (code {self._process.exitcode})"
            ) from None
        if kind != "ready":
            self._process.join(timeout=10)
            raise RuntimeError(detail)
        self._outbox = queue.SimpleQueue()  # this child's: a restarted engine does not inherit the last one's
        self._writer = threading.Thread(
            target=self._write, args=(requests_out, self._outbox), name="servelm-engine-writer"
        )
        self._writer.daemon = True
        self._writer.start()
        log.info("engine process %d ready", self._process.pid)

    async def stop(self) -> None:
        self._stopping = True
        if self._restarting is not None:
            self._restarting.cancel()
        if self._process is None:
            return
        if self._writer is not None:
            self._outbox.put(("stop",))
            self._outbox.put(None)  # the writer ends after sending it
        await asyncio.to_thread(self._join)
        self._read()  # the child's last steps, then its EOF: fails what is still open

    def _join(self) -> None:
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=5)

    def health_error(self) -> Optional[str]:
        """Why the engine cannot serve, or None."""
        return self._dead

    def has_work(self) -> bool:
        """Whether the child's batcher held any sequence after its last step (aborted rows included)."""
        return self._busy and self._dead is None

    # ------------------------------------------------------------------ requests
    def submit(self, prompt_ids: list[int], params: SamplingParams) -> EngineRequest:
        """Queue a sequence; read its Deltas from the returned stream."""
        if self._dead is not None:
            raise APIError(503, self._dead, code="engine_unavailable", headers={"Retry-After": "1"})
        request = self.requests.new(prompt_ids, params)
        self._send(("add", request.rid, prompt_ids, params))
        return request

    def abort(self, stream: Any) -> None:
        """Free the request's row at the child's next step (nothing if it already finished)."""
        if self.requests.close(stream):
            self._stop_sequence(stream.rid)

    def _stop_sequence(self, rid: int) -> None:
        """Free request ``rid``'s sequence at the child's next step (its reader went away, or a stop string ended its
        text)."""
        if self._dead is None:
            self._send(("abort", rid))

    def _send(self, message: tuple[Any, ...]) -> None:
        """Queue a message for the child; returns at once (the writer thread sends it)."""
        assert self._to_child is not None, "the engine is not started"
        self._outbox.put(message)

    def _write(self, connection: Connection, outbox: queue.SimpleQueue[Optional[tuple[Any, ...]]]) -> None:
        """The writer thread: send queued messages to the child until told to stop (None) or the child is
        gone (its reader, on the event loop, then sees EOF and fails what is still open)."""
        while (message := outbox.get()) is not None:
            try:
                connection.send(message)
            except OSError:
                return

    # ------------------------------------------------------------------ the child's steps, on the event loop
    def _read(self) -> None:
        """Take every step the child has sent so far (called by the loop when the pipe is readable)."""
        connection = self._from_child
        if connection is None or self._loop is None or self._dead is not None:
            return
        try:
            while connection.poll():
                _, batch, items, self._busy = connection.recv()
                if self.on_step is not None and batch:
                    self.on_step(batch)
                self.requests.deliver_here(
                    [
                        (rid, Delta("", finished, reason, tokens, error, _choices(logprobs), scheduled, token_ids))
                        for rid, token_ids, finished, reason, tokens, error, logprobs, scheduled in items
                    ]
                )
        except (EOFError, OSError):
            self._died()

    def _died(self) -> None:
        assert self._loop is not None and self._from_child is not None
        self._loop.remove_reader(self._from_child.fileno())
        self._outbox.put(None)  # the writer thread of the child that is gone ends
        if self._stopping:
            self._dead = "the engine process has stopped"
            self.requests.fail_all(self._dead)
            return
        self._process.join(timeout=5)
        code = self._process.exitcode
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < RESTART_WINDOW] + [now]
        if len(self._deaths) > MAX_RESTARTS:
            self._dead = (
                f"the engine process died (exit code {code}), {len(self._deaths)} times within "
                f"{RESTART_WINDOW:g} s: giving up"
            )
            log.error("%s", self._dead)
            self.requests.fail_all(self._dead)
            if self.on_give_up is not None:
                self.on_give_up(self._dead)
            return
        delay = min(2.0 ** (len(self._deaths) - 1), 30.0)
        self._dead = f"the engine process died (exit code {code}); restarting it"
        log.error("%s in %g s", self._dead, delay)
        self.requests.fail_all(self._dead)
        self._restarting = self._loop.create_task(self._restart(delay))

    async def _restart(self, delay: float) -> None:
        """Start a new engine process after ``delay`` seconds (more after each death within the window); until
        it is ready, requests get 503 and /health says why."""
        await asyncio.sleep(delay)
        if self._stopping:
            return
        try:
            await asyncio.to_thread(self._start)
        except Exception as exc:
            self._dead = f"the engine process could not be restarted: {exc}"
            log.error("%s", self._dead)
            if self.on_give_up is not None:
                self.on_give_up(self._dead)
            return
        assert self._loop is not None and self._from_child is not None
        self._busy = False
        self._dead = None
        self._loop.add_reader(self._from_child.fileno(), self._read)
        if self.on_restart is not None:
            self.on_restart()
        log.info("engine process restarted (%d death(s) within %g s)", len(self._deaths), RESTART_WINDOW)


# ---------------------------------------------------------------------- the child
def engine_main(
    make_batcher: Callable[[], Any], requests: Connection, outputs: Connection, log_level: str = "info"
) -> None:
    """The child process: build the batcher, then take requests and step until told to stop (or orphaned)."""
    # Ctrl+C reaches the whole process group: the server stops this process when it has drained its streams
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(log_level)
    try:
        driver = BatcherDriver(make_batcher)
    except BaseException as exc:
        outputs.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    gc.collect()
    gc.freeze()  # the model and libraries live as long as the process: keep them out of the cyclic collector's passes
    outputs.send(("ready", None))
    released = True  # nothing allocated yet
    while True:
        # peek when busy; when idle, wait IDLE_SECONDS, free the cache, then block until a request comes
        wait: Optional[float] = 0.0 if driver.has_work() else (None if released else IDLE_SECONDS)
        received = False
        try:
            while requests.poll(wait):
                message = requests.recv()
                wait, received = 0.0, True
                if message[0] == "add":
                    _, rid, prompt_ids, params = message
                    refused = driver.add(rid, prompt_ids, params)
                    if refused is not None:
                        outputs.send(
                            ("step", 0, [_wire(rid, refused)], driver.has_work())
                        )  # (OSError: the server is gone, below)
                elif message[0] == "abort":
                    driver.abort(message[1])
                else:  # "stop"
                    return
        except (EOFError, OSError):  # the server process is gone
            return
        if not driver.has_work():
            if not received and not released:
                driver.idle()
                released = True
            continue
        released = False
        batch, items = driver.step()
        try:
            outputs.send(("step", batch, [_wire(rid, delta) for rid, delta in items], driver.has_work()))
        except OSError:  # the server process is gone
            return


def _wire(rid: int, delta: Delta) -> tuple[Any, ...]:
    """A Delta as a plain tuple: cheaper to pickle than the dataclass."""
    logprobs = [(c.token, c.logprob, c.top) for c in delta.logprobs] if delta.logprobs else None
    return (
        rid,
        delta.token_ids,
        delta.finished,
        delta.finish_reason,
        delta.completion_tokens,
        delta.error,
        logprobs,
        delta.scheduled_at,
    )


def _choices(wired: Optional[list[tuple[Any, ...]]]) -> Optional[list[TokenChoice]]:
    return [TokenChoice(*c) for c in wired] if wired else None
