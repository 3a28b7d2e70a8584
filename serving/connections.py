"""Connections a slow or silent client cannot hold: each request must arrive whole (headers and body) within
``--request-read-timeout`` seconds of its first byte, or of the connection's opening.

uvicorn closes a connection idle between requests (``timeout_keep_alive``) and caps them
(``limit_concurrency``: a 503 past it), but it waits for ever on one that opened and sends nothing, or sends
its headers a byte at a time (slowloris). This protocol, uvicorn's httptools one with a read deadline, answers
such a connection 408 and closes it. Where httptools is missing, uvicorn's default protocol serves without
the deadline (``protocol_class`` returns None and says so in the log).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Optional

log = logging.getLogger("servelm.serving")

READ_TIMEOUT_ENV = "SERVELM_REQUEST_READ_TIMEOUT"  # how worker processes (which import this anew) learn the deadline
#: the protocol as an import path: what a uvicorn config that worker processes receive (pickled) names
PROTOCOL_PATH = "servelm.serving.connections:ReadDeadlineProtocol"

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # uvicorn without httptools (not uvicorn[standard])
    HttpToolsProtocol = None  # type: ignore[misc,assignment]


def protocol_class(read_timeout: float) -> Optional[type]:
    """uvicorn's httptools protocol with a ``read_timeout`` (seconds) to read each request, or None."""
    if HttpToolsProtocol is None:
        log.warning("httptools is not installed: requests are read without a deadline (pip install httptools)")
        return None
    ReadDeadlineProtocol.read_timeout = read_timeout
    os.environ[READ_TIMEOUT_ENV] = str(read_timeout)
    return ReadDeadlineProtocol


if HttpToolsProtocol is not None:

    class ReadDeadlineProtocol(HttpToolsProtocol):
        """A request not read whole within ``read_timeout`` seconds gets a 408 and its connection is closed."""

        read_timeout = float(os.environ.get(READ_TIMEOUT_ENV, "30"))  # seconds; workers read it from the environment
        _deadline: Optional[asyncio.TimerHandle] = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._start_deadline()

        def connection_lost(self, exc: Optional[Exception]) -> None:
            self._cancel_deadline()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:  # a request following another on the connection
                self._start_deadline()

        def on_message_complete(self) -> None:
            self._cancel_deadline()
            super().on_message_complete()

        def _start_deadline(self) -> None:
            self._deadline = self.loop.call_later(self.read_timeout, self._too_slow)

        def _cancel_deadline(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self.cycle is None or not self.cycle.response_started:
                body = b"request not received in time"
                self.transport.write(
                    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
                )
            if self.cycle is not None:
                self.cycle.disconnected = True
                self.cycle.message_event.set()
            self.transport.close()
