"""Stops that finish answers: on SIGTERM (or Ctrl+C) the open streams run on until they end or the graceful
timeout is nearly over; then each still open is cut with its route's error event (and ``[DONE]``), never
closed bare.

uvicorn stops taking connections on the signal and waits ``--graceful-timeout`` seconds for the open ones,
then cancels them: a stream cancelled that way ends without a last event, and a client (the openai one
among them) reads a truncated answer as a whole one. So the drain cuts the streams itself, one second before
uvicorn would. sse-starlette's own drain (which ends every stream at the signal) is turned off.

The signal handlers are chained, not replaced: uvicorn's still runs (it also forces an exit on a second
Ctrl+C). Where uvicorn installs none (a server run on a thread, as tests do), nothing is hooked.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

log = logging.getLogger("servelm.serving")

CUT_BEFORE = 1.0  # seconds before uvicorn's graceful timeout at which open streams are cut


@dataclass(eq=False)  # members of a set, by identity
class OpenStream:
    """A stream being written: its task, whether it waits for its next event, and whether it was cut."""

    task: Optional[asyncio.Task[Any]]
    waiting: bool = False
    cut: bool = False


@dataclass
class Drain:
    """The server's open streams and whether it is stopping (one per server; on its event loop)."""

    streams: set[OpenStream] = field(default_factory=set)
    stopping: bool = False
    cutting: bool = False

    def install(self, graceful_timeout: float) -> None:
        """Chain this drain into the process's SIGTERM and SIGINT handlers (uvicorn's), where it has them."""
        from sse_starlette.sse import AppStatus

        AppStatus.disable_automatic_graceful_drain()  # the drain ends the streams, with their last event
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue

            def handler(signum: int, frame: Any, previous: Any = previous) -> None:
                loop.call_soon_threadsafe(self.begin, graceful_timeout, signal.Signals(signum).name)
                previous(signum, frame)

            signal.signal(sig, handler)

    def begin(self, graceful_timeout: float, reason: str = "stop") -> None:
        """Stop: let the open streams finish, and cut those still open just before the graceful timeout."""
        if self.stopping:
            return
        self.stopping = True
        open_streams = len(self.streams)
        log.info(
            "%s: stopping; %d open stream(s) may finish within %g s, then are ended with an error event",
            reason,
            open_streams,
            graceful_timeout,
        )
        asyncio.get_running_loop().call_later(max(graceful_timeout - CUT_BEFORE, 0.0), self.cut)

    def cut(self) -> None:
        """End every open stream with its error event: a stream waiting for its next event is woken at once
        (its task cancelled, which it catches), one busy sending ends after that send."""
        self.cutting = True
        if self.streams:
            log.warning("graceful timeout: ending %d open stream(s) with an error event", len(self.streams))
        for stream in self.streams:
            stream.cut = True
            if stream.waiting and stream.task is not None:
                stream.task.cancel("servelm: graceful timeout")
