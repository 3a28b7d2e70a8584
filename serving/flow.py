"""The request flow every model route shares: admission, then either a JSON answer or an SSE stream,
with one error mapping, disconnect handling and the timeout.

A stream is primed before its headers are sent: its first event is awaited under the same disconnect
watch and timeout as a JSON answer, so anything that fails before the first token (a prompt too long,
a bad parameter, an engine refusing the request) is an HTTP error status, not an error event after a 200.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import APIError, as_api_error
from .http import SlotEventSourceResponse, check_api_key, guard_request, parse_body, read_json
from .logs import note_model
from .services.base import COMPLETIONS, ModelService
from .shutdown import OpenStream
from .state import ServedModel, ServerState

Body = TypeVar("Body", bound=BaseModel)

#: SSE events that end a stream after an error (OpenAI's shape for the route)
ErrorEvents = Callable[[APIError], list[dict[str, Any]]]


async def accept(request: Request, body_type: type[Body], route: str) -> tuple[ServedModel, ModelService, Body]:
    """The start of every OpenAI route: the API key checked, the JSON body parsed into ``body_type`` (a 400
    naming the field), the model it names (404 when not served; none: the default), loaded, and answering
    the route."""
    state: ServerState = request.app.state.servelm
    check_api_key(request, state.server.api_key)
    body = parse_body(body_type, await read_json(request, state.server.max_body_bytes))
    served = state.model(getattr(body, "model", None))
    service = served.ready()
    service.require(route)
    note_model(served.name, operation(service, route))
    return served, service, body


def operation(service: ModelService, route: str) -> str:
    """What a request asks of its model, as OpenTelemetry's GenAI conventions name it."""
    if service.operation == "chat" and route == COMPLETIONS:
        return "text_completion"
    return service.operation


async def run_json(request: Request, served: ServedModel, work: Callable[[], Awaitable[Any]]) -> Response:
    """Admit, run ``work`` under the disconnect watch and timeout, answer its result as JSON."""
    state = served.state
    await served.admission.acquire()
    try:
        result = await guard_request(request, work, state.server.timeout)
    except Exception as exc:
        raise as_api_error(exc) from None
    finally:
        served.admission.release()
    return result if isinstance(result, Response) else JSONResponse(result)


async def run_stream(
    request: Request, served: ServedModel, events: AsyncIterator[dict[str, Any]], on_error: ErrorEvents
) -> Response:
    """Admit, wait for the first event (errors before it are HTTP errors), then stream the rest as SSE.
    The admission slot is released when the stream ends, however it ends."""
    state = served.state
    await served.admission.acquire()
    start = time.perf_counter()
    try:
        first = await guard_request(request, events.__anext__, state.server.timeout)
    except StopAsyncIteration:
        first = None
    except BaseException as exc:
        served.admission.release()
        await events.aclose()  # type: ignore[attr-defined]
        if isinstance(exc, Exception):
            raise as_api_error(exc) from None
        raise
    state.metrics.ttft.observe(time.perf_counter() - start)
    remaining = state.server.timeout - (time.perf_counter() - start)  # seconds
    return SlotEventSourceResponse(
        _rest(first, events, remaining, state, on_error),
        served.admission.release,
        send_timeout=state.server.stream_stall_timeout,
    )


async def _rest(
    first: Any, events: AsyncIterator[dict[str, Any]], timeout: float, state: ServerState, on_error: ErrorEvents
) -> AsyncIterator[dict[str, Any]]:
    """The primed first event, then the others (inter-token latency observed), errors as events."""
    if first is None:
        return
    last = time.perf_counter()
    stream = OpenStream(asyncio.current_task())
    state.drain.streams.add(stream)
    try:
        yield first
        with anyio.fail_after(max(timeout, 0.001)):
            while not state.drain.cutting:
                stream.waiting = True
                try:
                    event = await events.__anext__()
                except StopAsyncIteration:
                    return
                finally:
                    stream.waiting = False
                now = time.perf_counter()
                state.metrics.itl.observe(now - last)
                last = now
                yield event
        for event in on_error(_cut_error(state)):
            yield event
    except asyncio.CancelledError:
        if not stream.cut:
            raise
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        for event in on_error(_cut_error(state)):
            yield event
    except TimeoutError:
        for event in on_error(
            APIError(504, f"the model did not finish within {state.server.timeout:g} s", code="timeout")
        ):
            yield event
    except Exception as exc:
        for event in on_error(as_api_error(exc, "model")):
            yield event
    finally:
        state.drain.streams.discard(stream)
        await events.aclose()  # type: ignore[attr-defined]


def _cut_error(state: ServerState) -> APIError:
    """The error a stream still open at the end of a graceful stop ends with."""
    return APIError(
        503,
        f"the server is stopping: this answer was cut at the end of its graceful timeout "
        f"({state.server.graceful_timeout:g} s); retry on another instance",
        code="server_shutting_down",
    )
