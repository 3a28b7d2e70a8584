"""In-process clients of the models a server serves: what ``servelm.agents.llm_client(name)`` returns to an agent
served beside model ``name``.

They have the ``openai`` client's interface (``chat.completions.create``, ``completions.create``,
``responses.create``; sync and async; ``stream=True`` iterates chunks or events) and return the ``openai``
package's types, but there is no HTTP hop: a call goes straight to the model's service, through its admission
(its limits hold for agents' calls too), engine and metrics. Each call is a span (``chat smollm2``) in the agent's
trace, with the engine's phases under it.

A call belongs to the agent request that made it (``CallScope``): when that request ends early (its client went
away, it timed out), its LLM calls are cancelled and their engine rows freed, also when the agent's code runs
on a thread of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Optional

from servelm.agents import ChatCompletionRequest, CompletionRequest, ResponsesAgentRequest
from servelm.agents.llm_client import install_local_clients

from . import tracing
from .errors import APIError, as_api_error
from .http import parse_body
from .services.base import CHAT, COMPLETIONS, RESPONSES, ModelService

if TYPE_CHECKING:
    from .state import ServedModel, ServerState

_servers: list[ServerState] = []  # the servers running in this process, newest last
_lock = threading.Lock()
_in_use = False  # whether a server here serves several models (only then can an agent call a model beside it)


def register(state: ServerState) -> None:
    """Make ``state``'s models reachable through ``llm_client`` (a server starting)."""
    global _in_use
    with _lock:
        _servers.append(state)
        install_local_clients(local_client)
        _in_use = any(len(s.models) > 1 for s in _servers)


def unregister(state: ServerState) -> None:
    """A server stopped: its models are no longer reachable in process."""
    global _in_use
    with _lock:
        if state in _servers:
            _servers.remove(state)
        if not _servers:
            install_local_clients(None)
        _in_use = any(len(s.models) > 1 for s in _servers)


def in_use() -> bool:
    """Whether agents here may call models beside them: a server in this process serves several. Where none does,
    agent calls skip the scopes (one test on the hot path)."""
    return _in_use


def find(name: str) -> Optional[ServedModel]:
    """The model ``name`` as the newest server in this process serves it (None if none does)."""
    with _lock:
        for state in reversed(_servers):
            served = state.models.get(name)
            if served is not None:
                return served
    return None


def local_client(name: str, asynchronous: bool) -> Any:
    """An in-process client of model ``name``, or None when no server here serves it."""
    if find(name) is None:
        return None
    return AsyncLocalClient(name) if asynchronous else LocalClient(name)


# ---------------------------------------------------------------------------------- scopes
class CallScope:
    """The in-process LLM calls of one agent request, cancelled together when the request ends. Calls
    register how to cancel themselves; calls made after the end are refused."""

    def __init__(self) -> None:
        self.closed = False
        self._cancels: dict[int, Callable[[], None]] = {}
        self._lock = threading.Lock()

    def add(self, key: int, cancel: Callable[[], None]) -> None:
        with self._lock:
            if self.closed:
                raise asyncio.CancelledError("the agent request that made this call has ended")
            self._cancels[key] = cancel

    def discard(self, key: int) -> None:
        with self._lock:
            self._cancels.pop(key, None)

    def close(self) -> None:
        """The request ended: cancel what is still running (call on the server's loop)."""
        with self._lock:
            self.closed = True
            cancels, self._cancels = list(self._cancels.values()), {}
        for cancel in cancels:
            cancel()


#: the scope of the agent call running in this context
call_scope: contextvars.ContextVar[Optional[CallScope]] = contextvars.ContextVar("servelm_call_scope", default=None)


def open_scope(trace_context: Any = None) -> tuple[CallScope, contextvars.Context]:
    """A new scope for one agent call, and a copy of the current context carrying it, and ``trace_context`` (an
    OpenTelemetry context) when given: run the agent's code in that context, and its LLM calls, wherever they
    run, belong to the scope and to the trace."""
    scope = CallScope()
    ctx = contextvars.copy_context()
    ctx.run(call_scope.set, scope)
    if trace_context is not None:
        from opentelemetry import context

        ctx.run(context.attach, trace_context)
    return scope, ctx


# ---------------------------------------------------------------------------------- the calls (on the loop)
def _served(name: str) -> tuple[ServedModel, ModelService]:
    served = find(name)
    if served is None:
        raise APIError(404, f"The model `{name}` is not served in this process.", param="model", code="model_not_found")
    return served, served.ready()


def _body(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The request body of an openai-style call: its keyword arguments (``extra_body`` merged, the client's own
    options dropped), naming the client's model when the call names none."""
    body = {k: v for k, v in kwargs.items() if k not in _CLIENT_OPTIONS and v is not _NOT_GIVEN}
    body.update(kwargs.get("extra_body") or {})
    body.setdefault("model", name)
    return _plain(body)


#: the openai client's per-call options, not body fields: ``extra_body`` is merged into the body; ``timeout`` bounds
#: the call (a stream: the wait for each item); ``extra_headers`` and ``extra_query`` mean nothing without HTTP (the
#: routes read no query here, and what headers carry, key, request id and trace, the agent's request already has)
_CLIENT_OPTIONS = {"extra_body", "extra_headers", "extra_query", "timeout"}
_NOT_GIVEN: Any
try:
    from openai import NOT_GIVEN as _NOT_GIVEN
except ImportError:  # pragma: no cover - openai is how agents call these clients
    _NOT_GIVEN = object()


def _plain(value: Any) -> Any:
    """Pydantic objects (the openai package's types in a request) as plain JSON data."""
    if hasattr(value, "model_dump"):
        return value.model_dump(exclude_none=True)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _seconds(timeout: Any) -> Optional[float]:
    """A call's ``timeout`` in seconds (a number, or an httpx.Timeout's read limit); None: no limit."""
    if timeout is None or timeout is _NOT_GIVEN:
        return None
    if isinstance(timeout, (int, float)):
        return float(timeout)
    read = getattr(timeout, "read", None)
    return float(read) if read is not None else None


def _prepared(kind: str, service: ModelService, body: dict[str, Any]) -> Any:
    """The call's body as the route's request type, checked as the route checks it (a 400 naming the field)."""
    if kind == CHAT:
        request: Any = parse_body(ChatCompletionRequest, body)
    elif kind == COMPLETIONS:
        request = parse_body(CompletionRequest, body)
    else:
        from .routes.responses import refuse_unsupported_options

        request = parse_body(ResponsesAgentRequest, body)
        refuse_unsupported_options(request)
    service.require(kind)
    return request


async def _admitted(served: ServedModel, work: Callable[[], Awaitable[Any]]) -> Any:
    await served.admission.acquire()
    try:
        return await work()
    finally:
        served.admission.release()


def _call_span(operation: str, name: str, body: dict[str, Any]) -> Any:
    attributes: dict[str, Any] = {
        tracing.OPERATION: operation,
        tracing.REQUEST_MODEL: name,
        tracing.SYSTEM: "servelm",
    }
    for key, attribute in (
        ("max_tokens", "gen_ai.request.max_tokens"),
        ("max_output_tokens", "gen_ai.request.max_tokens"),
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
    ):
        if isinstance(body.get(key), (int, float)):
            attributes[attribute] = body[key]
    return tracing.start_span(f"{operation} {name}", attributes, kind="CLIENT")


def _end_span(span: Any, usage: Any, reasons: list[str], exc: Optional[BaseException] = None) -> None:
    if span is None:
        return
    if exc is not None:
        tracing.fail(span, exc)
    if usage:  # chat and completions name them prompt/completion, Responses input/output
        span.set_attribute(tracing.INPUT_TOKENS, usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
        span.set_attribute(tracing.OUTPUT_TOKENS, usage.get("completion_tokens") or usage.get("output_tokens") or 0)
    if reasons:
        span.set_attribute(tracing.FINISH_REASONS, reasons)
    span.end()


async def _unary(kind: str, name: str, kwargs: dict[str, Any]) -> Any:
    """One non-streamed call: the openai type of its answer."""
    body = _body(name, kwargs)
    served, service = _served(body["model"])
    operation = "text_completion" if kind == COMPLETIONS else "chat"
    span = _call_span(operation, served.name, body)
    usage, reasons = None, []
    try:
        with tracing.attached(tracing.context_with(span) if span is not None else None):
            request = _prepared(kind, service, body)
            async with asyncio.timeout(_seconds(kwargs.get("timeout"))):
                if kind == CHAT:
                    answer = await _admitted(served, lambda: service.chat(request, served.name))
                    result = answer.model_dump(exclude_none=True)
                elif kind == COMPLETIONS:
                    result = await _admitted(served, lambda: service.completion(request, served.name))
                else:
                    from .routes.responses import echo_request

                    result = echo_request(
                        await _admitted(served, lambda: service.responses(request, served.name)), request
                    )
            if kind == RESPONSES:
                reasons = [result.get("status", "completed")]
            else:
                reasons = [c.get("finish_reason") or "stop" for c in result.get("choices", [])]
            usage = result.get("usage")
    except BaseException as exc:
        _end_span(span, None, [], exc)
        raise
    _end_span(span, usage, reasons)
    return _typed(kind, result)


async def _stream(kind: str, name: str, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
    """One streamed call: its chunks (chat, completions) or events (responses) as openai types. Everything that
    can fail before the first item fails on the first ``__anext__``, as an HTTP call fails before its body."""
    body = _body(name, kwargs)
    served, service = _served(body["model"])
    span = _call_span("text_completion" if kind == COMPLETIONS else "chat", served.name, body)
    ctx = tracing.context_with(span) if span is not None else None
    usage: Any = None
    reasons: list[str] = []
    failure: Optional[BaseException] = None
    from .routes.responses import echo_request

    try:
        with tracing.attached(ctx):
            request = _prepared(kind, service, body)
    except BaseException as exc:
        _end_span(span, None, [], exc)
        raise
    # the usage chunk is always asked for (the span records the tokens), and passed on where the call asked
    source: Any  # an async generator of chunk texts (chat, completions) or event dicts (responses)
    if kind == CHAT:
        source = service.chat_events(request, served.name, True)
    elif kind == COMPLETIONS:
        source = service.completion_events(request, served.name, True)
    else:
        source = service.responses_stream(request, served.name)
    options = getattr(request, "stream_options", None)
    wants_usage = bool(options and options.include_usage)
    wait = _seconds(kwargs.get("timeout"))
    await served.admission.acquire()
    try:
        while True:
            with tracing.attached(ctx):
                try:
                    async with asyncio.timeout(wait):
                        item = await source.__anext__()
                except StopAsyncIteration:
                    return
            if kind == RESPONSES:
                if isinstance(item.get("response"), dict):
                    echo_request(item["response"], request)
                    if item["type"] in ("response.completed", "response.incomplete", "response.failed"):
                        usage = item["response"].get("usage")
                        reasons = [item["response"].get("status", "completed")]
                yield _typed("event", item)
            else:
                chunk = json.loads(item)
                reasons += [c["finish_reason"] for c in chunk.get("choices", []) if c.get("finish_reason")]
                if chunk.get("usage"):
                    usage = chunk["usage"]
                    if not chunk.get("choices") and not wants_usage:
                        continue
                yield _typed(kind + "_chunk", chunk)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        served.admission.release()
        with tracing.attached(ctx):
            await source.aclose()
        _end_span(span, usage, reasons, failure if not isinstance(failure, GeneratorExit) else None)


def _typed(kind: str, data: dict[str, Any]) -> Any:
    """``data`` as the openai package's type for it (plain data where openai is not installed)."""
    try:
        from openai._models import construct_type
        from openai.types import Completion
        from openai.types.chat import ChatCompletion, ChatCompletionChunk
        from openai.types.responses import Response, ResponseStreamEvent
    except ImportError:  # pragma: no cover
        return data
    target: Any = {
        CHAT: ChatCompletion,
        "chat_chunk": ChatCompletionChunk,
        COMPLETIONS: Completion,
        "completions_chunk": Completion,
        RESPONSES: Response,
        "event": ResponseStreamEvent,
    }[kind]
    return construct_type(type_=target, value=data)


def _as_openai_error(exc: Exception) -> Exception:
    """A servelm APIError as the openai package's exception of its status (what the same call over HTTP raises)."""
    try:
        import httpx
        import openai
    except ImportError:  # pragma: no cover
        return exc if isinstance(exc, APIError) else as_api_error(exc)
    if isinstance(exc, TimeoutError):  # the call's ``timeout`` passed: what the openai client raises then
        request: Any = httpx.Request("POST", "http://servelm.local/v1")
        return openai.APITimeoutError(request=request)
    if not isinstance(exc, APIError):
        exc = as_api_error(exc)
    classes = {
        400: openai.BadRequestError,
        401: openai.AuthenticationError,
        403: openai.PermissionDeniedError,
        404: openai.NotFoundError,
        409: openai.ConflictError,
        422: openai.UnprocessableEntityError,
        429: openai.RateLimitError,
    }
    cls = classes.get(exc.status, openai.InternalServerError if exc.status >= 500 else openai.APIStatusError)
    body = exc.body()
    response: Any = httpx.Response(exc.status, json=body, request=httpx.Request("POST", "http://servelm.local/v1"))
    return cls(exc.message, response=response, body=body.get("error"))


# ---------------------------------------------------------------------------------- async client
class AsyncLocalClient:
    """``openai.AsyncOpenAI``'s interface over the model ``name`` served in this process."""

    def __init__(self, name: str):
        self.model = name
        self.chat = _Namespace(completions=_AsyncCreate(name, CHAT))
        self.completions = _AsyncCreate(name, COMPLETIONS)
        self.responses = _AsyncCreate(name, RESPONSES)


class _Namespace:
    def __init__(self, **members: Any):
        self.__dict__.update(members)


class _AsyncCreate:
    def __init__(self, name: str, kind: str):
        self.name, self.kind = name, kind

    async def create(self, **kwargs: Any) -> Any:
        if kwargs.get("stream"):
            stream = AsyncLocalStream(_stream(self.kind, self.name, kwargs))
            await stream.start()
            return stream
        try:
            return await _unary(self.kind, self.name, kwargs)
        except Exception as exc:
            raise _as_openai_error(exc) from None


class AsyncLocalStream:
    """An in-process stream as ``openai.AsyncStream``: ``async for``, ``close()``, ``async with``. Closed with the
    agent request it belongs to, if the agent has not closed it."""

    def __init__(self, items: AsyncIterator[Any]):
        self._items = items
        self._first: list[Any] = []
        self._scope = call_scope.get()
        self._key = id(self)

    async def start(self) -> None:
        """Take the first item now: a refused request raises here, as ``create`` over HTTP does."""
        if self._scope is not None:
            loop = asyncio.get_running_loop()
            self._scope.add(self._key, lambda: _forget(loop.create_task(self.close())))
        try:
            self._first.append(await self._items.__anext__())
        except StopAsyncIteration:
            pass
        except Exception as exc:
            await self.close()
            raise _as_openai_error(exc) from None

    def __aiter__(self) -> AsyncLocalStream:
        return self

    async def __anext__(self) -> Any:
        if self._first:
            return self._first.pop()
        try:
            return await self._items.__anext__()
        except StopAsyncIteration:
            await self.close()
            raise
        except Exception as exc:
            await self.close()
            raise _as_openai_error(exc) from None

    async def close(self) -> None:
        if self._scope is not None:
            self._scope.discard(self._key)
        await self._items.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> AsyncLocalStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


def _forget(_: Any) -> None:
    """Drop what a scheduling call returns (a scope's cancel callbacks return nothing)."""


# ---------------------------------------------------------------------------------- sync client
class LocalClient:
    """``openai.OpenAI``'s interface over the model ``name`` served in this process, for agent code on a thread
    (sync ``predict`` / ``predict_stream``): each call runs on the server's event loop, in the calling thread's
    context (its trace and its request's scope)."""

    def __init__(self, name: str):
        self.model = name
        self.chat = _Namespace(completions=_SyncCreate(name, CHAT))
        self.completions = _SyncCreate(name, COMPLETIONS)
        self.responses = _SyncCreate(name, RESPONSES)


def _server_loop(name: str) -> asyncio.AbstractEventLoop:
    served = find(name)
    loop = getattr(served.state, "loop", None) if served is not None else None
    if loop is None:
        raise RuntimeError(f"model `{name}` is not being served by a running server in this process")
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise RuntimeError(
            "llm_client() is the blocking client: on the event loop (apredict, apredict_stream) use "
            "async_llm_client() and await its calls"
        )
    return loop


def _run(loop: asyncio.AbstractEventLoop, make: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``make()`` on ``loop`` in a copy of this thread's context, wait for it here, and cancel it when this
    thread's agent request ends."""
    scope = call_scope.get()
    ctx = contextvars.copy_context()
    done: concurrent.futures.Future[Any] = concurrent.futures.Future()
    holder: dict[str, asyncio.Task[Any]] = {}

    def start() -> None:
        if not done.set_running_or_notify_cancel():
            return
        task: asyncio.Task[Any] = loop.create_task(make(), context=ctx)  # type: ignore[arg-type]
        holder["task"] = task

        def finished(t: asyncio.Task[Any]) -> None:
            if t.cancelled():
                done.set_exception(asyncio.CancelledError("the agent request that made this call has ended"))
            elif t.exception() is not None:
                done.set_exception(t.exception())
            else:
                done.set_result(t.result())

        task.add_done_callback(finished)

    def cancel() -> None:
        task = holder.get("task")
        if task is not None:
            task.cancel()
        else:
            done.cancel()

    key = id(done)
    if scope is not None:
        scope.add(key, lambda: _forget(loop.call_soon_threadsafe(cancel)))
    try:
        loop.call_soon_threadsafe(start)
        return done.result()
    finally:
        if scope is not None:
            scope.discard(key)


class _SyncCreate:
    def __init__(self, name: str, kind: str):
        self.name, self.kind = name, kind

    def create(self, **kwargs: Any) -> Any:
        loop = _server_loop(self.name)
        if kwargs.get("stream"):
            return LocalStream(loop, _stream(self.kind, self.name, kwargs))
        try:
            return _run(loop, lambda: _unary(self.kind, self.name, kwargs))
        except Exception as exc:
            raise _as_openai_error(exc) from None


class LocalStream:
    """An in-process stream as ``openai.Stream``: iterate it, ``close()`` it, or use it in ``with``. Each item
    is taken on the server's loop; the first is taken at once, so a refused request raises from ``create``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, items: AsyncIterator[Any]):
        self._loop = loop
        self._items = items
        self._closed = False
        self._first: list[Any] = []
        try:
            self._first.append(_run(loop, items.__anext__))
        except StopAsyncIteration:
            self._closed = True
        except Exception as exc:
            self.close()
            raise _as_openai_error(exc) from None

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._first:
            return self._first.pop()
        if self._closed:
            raise StopIteration
        try:
            return _run(self._loop, self._items.__anext__)
        except StopAsyncIteration:
            self._closed = True
            raise StopIteration from None
        except Exception as exc:
            self.close()
            raise _as_openai_error(exc) from None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                asyncio.run_coroutine_threadsafe(self._items.aclose(), self._loop).result()  # type: ignore[attr-defined]
            except Exception:
                pass

    def __enter__(self) -> LocalStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._closed and not self._loop.is_closed():
            self._closed = True
            asyncio.run_coroutine_threadsafe(self._items.aclose(), self._loop)  # type: ignore[attr-defined]
