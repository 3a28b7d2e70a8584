"""HTTP plumbing shared by the routes: JSON bodies with limits, auth, SSE responses that release
their slot, and cancellation on client disconnect or timeout."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Optional, TypeVar

from pydantic import BaseModel, ValidationError
from sse_starlette.sse import EventSourceResponse, SendTimeoutError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from .errors import APIError, validation_error
from .logs import note_error

log = logging.getLogger("servelm.serving")

T = TypeVar("T", bound=BaseModel)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw request body; 413 past ``max_bytes`` (checked while reading), 400 if empty."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise APIError(
            413, f"request body of {declared} bytes is over the {max_bytes}-byte limit", code="payload_too_large"
        )
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > max_bytes:
            raise APIError(413, f"request body is over the {max_bytes}-byte limit", code="payload_too_large")
    if not body:
        raise APIError(400, "request body is empty; send a JSON object", code="invalid_json")
    return bytes(body)


#: bodies from this size on are parsed on a worker thread: the event loop keeps writing other clients' streams
#: (a 5 MB body of 100 000 records took the loop for a second)
OFF_LOOP_BYTES = 1 << 20

P = TypeVar("P")


async def parsed(size: int, parse: Callable[..., P], *args: Any) -> P:
    """``parse(*args)``, on a worker thread when the body it reads is ``OFF_LOOP_BYTES`` or more."""
    if size >= OFF_LOOP_BYTES:
        return await asyncio.to_thread(parse, *args)
    return parse(*args)


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request body parsed as JSON; 413 past ``max_bytes`` (checked while reading), 400 if invalid."""
    body = await read_body(request, max_bytes)
    return await parsed(len(body), parse_json, body)


def parse_json(body: bytes) -> Any:
    """A body as JSON; a 400 when it is not JSON (or nests too deeply)."""
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from exc
    except RecursionError:
        raise APIError(400, "request body nests JSON too deeply", code="invalid_json") from None


def parse_body(model: type[T], body: Any) -> T:
    """Validate a JSON body into ``model``, strictly (a string is not a number, 0 is not false: what the OpenAPI
    document says is what is accepted); a 400 naming the field when it does not fit."""
    if not isinstance(body, dict):
        raise APIError(400, f"request body must be a JSON object, got {type(body).__name__}", code="invalid_json")
    try:
        return model.model_validate(body, strict=True)
    except ValidationError as exc:
        raise validation_error(exc) from None


def check_api_key(request: Request, api_key: Optional[str]) -> None:
    """401 unless the request carries ``Authorization: Bearer <api_key>`` (when a key is set)."""
    if not api_key:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise APIError(
            401,
            "missing or invalid API key: send 'Authorization: Bearer <key>'",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


def error_response(exc: APIError) -> JSONResponse:
    """The JSON response for an APIError (its message also goes to the request's access line)."""
    note_error(exc.message)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


R = TypeVar("R")


async def guard_request(request: Request, work: Callable[[], Awaitable[R]], timeout: float) -> R:
    """Run ``work`` in this task, cancelling it at once if the client disconnects (499, frees the slot)
    or after ``timeout`` seconds (504). One watcher task and one timer per request, no task group:
    this sits on every non-streamed request's path."""
    task = asyncio.current_task()
    assert task is not None
    reason: Optional[APIError] = None

    def stop(error: APIError) -> None:
        nonlocal reason
        if reason is None:
            reason = error
            task.cancel()

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        stop(APIError(499, "client disconnected", code="client_closed_request"))

    watcher = asyncio.get_running_loop().create_task(watch())
    timer = asyncio.get_running_loop().call_later(
        timeout, stop, APIError(504, f"the model did not answer within {timeout:g} s", code="timeout")
    )
    try:
        return await work()
    except asyncio.CancelledError:
        if reason is not None:
            task.uncancel()
            raise reason from None
        raise
    finally:
        watcher.cancel()
        timer.cancel()


class SlotEventSourceResponse(EventSourceResponse):
    """An SSE response that closes its generator and releases its admission slot however it ends
    (finished, failed, client gone, or never started).

    The slot is released as soon as the last event is sent, not after sse-starlette has torn down its
    helper tasks: under load that teardown takes several event-loop turns, and a client that sends its
    next request at once would otherwise wait for a slot its previous request no longer uses.
    """

    def __init__(self, events: AsyncIterator[dict[str, Any]], on_close: Callable[[], None], **kwargs: Any):
        super().__init__(events, ping=15, sep="\n", **kwargs)  # events end with "\n\n", as OpenAI's do
        self._events = events
        self._on_close: Optional[Callable[[], None]] = on_close
        self._watch: Optional[asyncio.TimerHandle] = None  # the stall check (see _send_with_timeout)
        self._sender: Optional[asyncio.Task[Any]] = None
        self._sending_since: Optional[float] = None  # time.monotonic() when the send in progress began
        self._stalled = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self._watch is not None:
                self._watch.cancel()
            try:
                await self._events.aclose()  # type: ignore[attr-defined]
            finally:
                self._release()

    async def _stream_response(self, send: Send) -> None:
        try:
            await super()._stream_response(send)
        finally:
            self._release()

    def _release(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        # A send waits only when the client stopped reading (the socket's buffers are full): past send_timeout
        # the stream is dropped (its generator closed, its engine row freed), as sse-starlette's own send timeout
        # does. That one opens a cancel scope around every event, and asyncio's timeout arms a timer per event
        # (6 us, a few percent of a busy server's loop): here each send notes when it started, and one timer per
        # stream, re-armed at most every send_timeout seconds, cancels a send that has waited too long.
        if self.send_timeout is None:
            await send(message)
            return
        if self._watch is None:
            self._watch = asyncio.get_running_loop().call_later(self.send_timeout, self._check_stall)
        self._sender = asyncio.current_task()
        self._sending_since = time.monotonic()
        try:
            await send(message)
        except asyncio.CancelledError:
            if not self._stalled or self._sender is None:
                raise
            self._sender.uncancel()
            self._send_interrupted = True
            log.warning("a stream's client read nothing for %g s: the stream is dropped", self.send_timeout)
            raise SendTimeoutError() from None
        except BaseException:
            self._send_interrupted = True
            raise
        finally:
            self._sending_since = None

    def _check_stall(self) -> None:
        """Cancel the send in progress if it has waited ``send_timeout`` seconds; else look again when it could."""
        assert self.send_timeout is not None
        since, now = self._sending_since, time.monotonic()
        if since is not None and now - since >= self.send_timeout and self._sender is not None:
            self._stalled = True
            self._watch = None
            self._sender.cancel()
            return
        wait = self.send_timeout - (now - since) if since is not None else self.send_timeout
        self._watch = asyncio.get_running_loop().call_later(max(wait, 0.01), self._check_stall)
