"""The generic model base class (MLflow's ``PythonModel``) and the context handed to it at load."""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from concurrent.futures import Executor


@dataclass
class PythonModelContext:
    """What a model sees at load: artifact names mapped to absolute paths, and its model_config."""

    artifacts: dict[str, str] = field(default_factory=dict)
    model_config: dict[str, Any] = field(default_factory=dict)


def takes_context(method: Callable[..., Any]) -> bool:
    """True when a predict-like method's first parameter is MLflow's ``context`` argument.

    MLflow 3 accepts both ``predict(self, context, model_input, params=None)`` and
    ``predict(self, model_input, params=None)``; this tells them apart once, at load.
    """
    try:
        params = list(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0] == "context"


_NO_HINT: Any = None


def input_type_hint(func: Any) -> Any:
    """The type hint on the model-input parameter of a predict function (the first one that is not
    self / context / params), or None."""
    import typing

    func = inspect.unwrap(func) if callable(func) else None
    if func is None:
        return _NO_HINT
    try:
        hints = typing.get_type_hints(func)
        names = [p for p in inspect.signature(func).parameters if p not in ("self", "context", "params")]
    except Exception:
        return _NO_HINT
    return hints.get(names[0]) if names else _NO_HINT


def overrides(instance: Any, base: type, name: str) -> bool:
    """True when ``instance``'s class defines ``name`` itself rather than inheriting ``base``'s."""
    return getattr(type(instance), name, None) is not getattr(base, name, None)


class PythonModel:
    """Base class of custom models: override ``predict`` (and optionally ``predict_stream``).

    ``load_context`` runs once when the model is loaded (open artifacts there, not in ``__init__``).
    Async servers call ``apredict`` / ``apredict_stream``; override them for native async code, otherwise
    they run the sync methods in a worker thread.
    """

    _input_type_hint: Any = None  # the type hint of predict's input, set per subclass

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "predict" in cls.__dict__:
            # The input's type hint, evaluated now, where the class is defined: a cloudpickled class keeps
            # it (its predict's globals do not keep the names that string annotations refer to).
            cls._input_type_hint = input_type_hint(cls.__dict__["predict"])

    def load_context(self, context: PythonModelContext) -> None:
        """Load artifacts and settings; called once before the first predict."""

    def predict(
        self, context: Optional[PythonModelContext], model_input: Any, params: Optional[dict[str, Any]] = None
    ) -> Any:
        """Return the model's output for ``model_input``."""
        if overrides(self, PythonModel, "apredict"):
            import asyncio

            return asyncio.run(self.apredict(context, model_input, params))
        raise NotImplementedError(f"{type(self).__name__} must implement predict (or apredict)")

    def predict_stream(
        self, context: Optional[PythonModelContext], model_input: Any, params: Optional[dict[str, Any]] = None
    ) -> Iterator[Any]:
        """Yield the output in pieces; models that cannot stream leave this unimplemented."""
        raise NotImplementedError(f"{type(self).__name__} does not implement predict_stream")

    async def apredict(
        self, context: Optional[PythonModelContext], model_input: Any, params: Optional[dict[str, Any]] = None
    ) -> Any:
        """Async predict; by default the sync predict in a worker thread."""
        import asyncio

        return await asyncio.to_thread(self.predict, context, model_input, params)

    async def apredict_stream(
        self, context: Optional[PythonModelContext], model_input: Any, params: Optional[dict[str, Any]] = None
    ) -> AsyncIterator[Any]:
        """Async predict_stream; by default the sync generator stepped in a worker thread."""
        async for item in iterate_in_thread(self.predict_stream(context, model_input, params)):
            yield item


_DONE = object()


async def iterate_in_thread(
    iterator: Iterator[Any], executor: Optional[Executor] = None, context: Optional[contextvars.Context] = None
) -> AsyncIterator[Any]:
    """Step a blocking iterator in worker threads (``executor``, else the loop's default), in ``context`` when given
    (what the generator's code sees as its context variables); close it when the consumer stops early.

    A generator cannot be closed while another thread runs it, so a consumer that stops with a step in
    flight leaves the close to run, in the executor, right after that step returns.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    step: Optional[asyncio.Future[Any]] = None
    run: Any = context.run if context is not None else _call
    try:
        while True:
            step = loop.run_in_executor(executor, run, next, iterator, _DONE)
            item = await asyncio.shield(step)  # a cancelled consumer must not mark the running step done
            step = None
            if item is _DONE:
                return
            yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            if step is None or step.done():
                run(close)
            else:

                def close_after(done: Any) -> None:
                    if not done.cancelled():
                        done.exception()  # taken: its consumer has gone (it may be the end of the agent's request)
                    loop.run_in_executor(executor, run, close)

                step.add_done_callback(close_after)


def _call(fn: Any, *args: Any) -> Any:
    return fn(*args)


class FunctionPythonModel(PythonModel):
    """A PythonModel around a one-argument callable (``save_model(python_model=fn)``)."""

    def __init__(self, func: Callable[[Any], Any]):
        self.func = func
        self._input_type_hint = input_type_hint(func)

    def predict(
        self, context: Optional[PythonModelContext], model_input: Any, params: Optional[dict[str, Any]] = None
    ) -> Any:
        return self.func(model_input)


def drive_async_iterator(iterator: AsyncIterator[Any]) -> Iterator[Any]:
    """Iterate an async iterator from sync code on a private event loop (for async-only agents)."""
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(iterator.__anext__())
            except StopAsyncIteration:
                return
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            loop.run_until_complete(aclose())
        loop.close()
