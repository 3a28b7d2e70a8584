"""``ServerState``: the models one server serves (each a ``ServedModel``: its service once loaded, or why it
failed, its engine options and admission limits), with the server's options, metrics and open streams.
Routes reach it as ``request.app.state.servelm``; requests pick their model by name (``ServerState.model``)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any, Optional

from servelm.agents.ids import now_seconds
from servelm.agents.llm_client import declared_llm

from .admission import Admission
from .engines.process import ProcessEngine
from .errors import APIError
from .metrics import ServerMetrics
from .options import EngineOptions, ServerOptions
from .responses_store import ResponseStore
from .services.base import ModelService
from .services.build import build_service
from .shutdown import Drain

log = logging.getLogger("servelm.serving")

#: called with the reason when a model fails to load, or its engine process died too often to restart it
#: (the CLI exits non-zero; tests may record it)
LoadErrorHandler = Callable[[str], None]


LOADING_LOG_INTERVAL = 10.0  # seconds between "still loading" lines


async def _still_loading(model_name: str, started: float) -> None:
    """A log line every ``LOADING_LOG_INTERVAL`` seconds while a model loads: a large checkpoint or a GGUF
    conversion takes a minute on a small machine, and a silent minute reads as a hang."""
    while True:
        await asyncio.sleep(LOADING_LOG_INTERVAL)
        log.info("still loading model %s (%.0f s so far)", model_name, time.monotonic() - started)


class ServedModel:
    """One model of the server: its name, engine options and limits, and its service once loaded (or the load
    error). Each model has its own admission (``max_concurrency`` running, ``max_queue`` waiting)."""

    def __init__(
        self,
        state: ServerState,
        name: str,
        engine: EngineOptions,
        max_concurrency: Optional[int] = None,
        max_queue: Optional[int] = None,
    ):
        self.state = state
        self.name = name
        self.engine = engine
        self.metrics = state.metrics.model(name)
        self.admission = Admission(
            max_concurrency or state.server.max_concurrency,
            state.server.max_queue if max_queue is None else max_queue,
            state.metrics,
            self.metrics,
        )
        self.service: Optional[ModelService] = None
        self.load_error: Optional[str] = None
        self.created = now_seconds()

    @property
    def status(self) -> str:
        """``ok``, ``loading`` or ``error`` (the model failed to load, or its engine died)."""
        if self.service is None:
            return "error" if self.load_error else "loading"
        return "error" if self.service.health_error() else "ok"

    def detail(self) -> Optional[str]:
        """Why the model does not serve (None when it does)."""
        if self.service is None:
            return self.load_error or "loading"
        return self.service.health_error()

    def ready(self) -> ModelService:
        """The service, or a 503 saying why there is none (still loading, failed, engine gone)."""
        if self.service is None:
            what = f"model `{self.name}`" if len(self.state.models) > 1 else "model"
            message = f"{what} failed to load: {self.load_error}" if self.load_error else f"{what} is still loading"
            raise APIError(503, message, code="model_not_ready", headers={"Retry-After": "1"})
        return self.service

    def _check_declared_llm(self, service: ModelService) -> None:
        """An agent whose model_config declares the LLM it calls (``llm: NAME``) loads only beside that model."""
        llm = declared_llm(getattr(getattr(service, "model", None), "model_config", None))
        if llm is not None and llm not in self.state.models:
            served = ", ".join(f"`{n}`" for n in self.state.models)
            raise ValueError(
                f"this agent calls the LLM `{llm}` (model_config llm), which this server does not serve (it serves "
                f"{served}); serve it beside the agent: servelm serve -m AGENT -m {llm}=LLM_DIR"
            )

    async def load(self, model_or_path: Any, on_error: Optional[LoadErrorHandler] = None) -> None:
        """Load the model (off the event loop) and start its service; a failure is logged on one line,
        kept for /health, and handed to ``on_error``."""
        label = f"model {self.name}" if len(self.state.models) > 1 else "model"
        source = model_or_path if isinstance(model_or_path, str) else type(model_or_path).__name__
        log.info("loading model %s from %s", self.name, source)
        started = time.monotonic()
        heartbeat = asyncio.create_task(_still_loading(self.name, started))
        try:
            service = await asyncio.to_thread(
                build_service, model_or_path, self.state.server, self.engine, self.state.metrics
            )
            service.model_metrics, service.served_name = self.metrics, self.name
            self._check_declared_llm(service)
            await service.start()
            engine = getattr(service, "engine", None)
            if isinstance(engine, ProcessEngine):
                engine.on_restart = self.state.metrics.engine_restarts.inc
                engine.on_give_up = on_error
            # Everything loaded so far (torch, transformers, vLLM, the model) lives as long as the server:
            # freeze it out of the cyclic collector, whose full passes over that heap stall the event loop.
            gc.collect()
            gc.freeze()
            self.service = service
            log.info("model %s ready (%s), loaded in %.1f s", self.name, service.kind, time.monotonic() - started)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            log.error("%s failed to load: %s", label, self.load_error)
            if on_error is not None:
                on_error(f"{label} failed to load: {self.load_error}")
        finally:
            heartbeat.cancel()


class ServerState:
    """The server's models (the first is the default: requests that name none go to it), plus its options,
    metrics, stored responses and open streams.

    ``more`` lists the other models as ``(name, engine options, max_concurrency, max_queue)``; ``limits`` are the
    first's; a limit left None is the server's. The one-model properties (``service``, ``admission``...) are the
    default model's.
    """

    def __init__(
        self,
        server: ServerOptions,
        engine: EngineOptions,
        model_name: str,
        more: Optional[list[tuple[str, EngineOptions, Optional[int], Optional[int]]]] = None,
        limits: tuple[Optional[int], Optional[int]] = (None, None),
    ):
        self.server = server
        self.metrics = ServerMetrics()
        self.models: dict[str, ServedModel] = {}
        for name, options, concurrency, queue in [(model_name, engine, *limits), *(more or [])]:
            if name in self.models:
                raise ValueError(f"two models are named `{name}`; give each its own name (NAME=PATH)")
            self.models[name] = ServedModel(self, name, options, concurrency, queue)
        self.default = next(iter(self.models.values()))
        self.loop: Optional[asyncio.AbstractEventLoop] = (
            None  # the loop serving it (agents' in-process calls run there)
        )
        self.responses = ResponseStore()
        self.drain = Drain()  # the open streams, and whether the server is stopping

    # ------------------------------------------------------------------ picking a model
    def model(self, name: Optional[str]) -> ServedModel:
        """The model a request names (the default one when it names none); 404 naming the served ones."""
        if not name:
            return self.default
        served = self.models.get(name)
        if served is None:
            names = ", ".join(f"`{n}`" for n in self.models)
            raise APIError(
                404,
                f"The model `{name}` does not exist; this server serves {names}.",
                param="model",
                code="model_not_found",
            )
        return served

    @property
    def status(self) -> str:
        """``ok`` when every model serves, else ``error`` if one failed, else ``loading``."""
        statuses = {m.status for m in self.models.values()}
        return "ok" if statuses == {"ok"} else "error" if "error" in statuses else "loading"

    # ---------------------------------------------------------- the default model (one-model servers, embedding)
    @property
    def model_name(self) -> str:
        return self.default.name

    @property
    def service(self) -> Optional[ModelService]:
        return self.default.service

    @property
    def admission(self) -> Admission:
        return self.default.admission
