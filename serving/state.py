"""``ServerState``: one server's model service (once loaded) or why it failed, with its options,
admission limits and metrics. Routes reach it as ``request.app.state.servelm``."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any, Optional

from servelm.agents.ids import now_seconds

from .admission import Admission
from .engines.process import ProcessEngine
from .errors import APIError
from .metrics import ServerMetrics
from .options import EngineOptions, ServerOptions
from .responses_store import ResponseStore
from .services.base import ModelService
from .services.loading import build_service
from .shutdown import Drain

log = logging.getLogger("servelm.serving")

#: called with the reason when the model fails to load, or its engine process died too often to restart it
#: (the CLI exits non-zero; tests may record it)
LoadErrorHandler = Callable[[str], None]


LOADING_LOG_INTERVAL = 10.0  # seconds between "still loading" lines


async def _still_loading(model_name: str, started: float) -> None:
    """A log line every ``LOADING_LOG_INTERVAL`` seconds while a model loads: a large checkpoint or a GGUF
    conversion takes a minute on a small machine, and a silent minute reads as a hang."""
    while True:
        await asyncio.sleep(LOADING_LOG_INTERVAL)
        log.info("still loading model %s (%.0f s so far)", model_name, time.monotonic() - started)


class ServerState:
    """The model service once loaded (or the load error), plus options, limits and metrics."""

    def __init__(self, server: ServerOptions, engine: EngineOptions, model_name: str):
        self.server = server
        self.engine = engine
        self.model_name = model_name
        self.metrics = ServerMetrics(model_name)
        self.admission = Admission(server.max_concurrency, server.max_queue, self.metrics)
        self.service: Optional[ModelService] = None
        self.load_error: Optional[str] = None
        self.created = now_seconds()
        self.responses = ResponseStore()
        self.drain = Drain()  # the open streams, and whether the server is stopping

    @property
    def status(self) -> str:
        """``ok``, ``loading`` or ``error`` (the model failed to load, or its engine died)."""
        if self.service is None:
            return "error" if self.load_error else "loading"
        return "error" if self.service.health_error() else "ok"

    def ready(self) -> ModelService:
        """The service, or a 503 saying why there is none (still loading, failed, engine gone)."""
        if self.service is None:
            message = f"model failed to load: {self.load_error}" if self.load_error else "model is still loading"
            raise APIError(503, message, code="model_not_ready", headers={"Retry-After": "1"})
        return self.service

    def check_model(self, name: Optional[str]) -> None:
        """404 when a request names another model than the one served."""
        if name and name != self.model_name:
            raise APIError(
                404,
                f"The model `{name}` does not exist; this server serves `{self.model_name}`.",
                param="model",
                code="model_not_found",
            )

    async def load(self, model_or_path: Any, on_error: Optional[LoadErrorHandler] = None) -> None:
        """Load the model (off the event loop) and start its service; a failure is logged on one line,
        kept for /health, and handed to ``on_error``."""
        source = model_or_path if isinstance(model_or_path, str) else type(model_or_path).__name__
        log.info("loading model %s from %s", self.model_name, source)
        started = time.monotonic()
        heartbeat = asyncio.create_task(_still_loading(self.model_name, started))
        try:
            service = await asyncio.to_thread(build_service, model_or_path, self.server, self.engine, self.metrics)
            await service.start()
            engine = getattr(service, "engine", None)
            if isinstance(engine, ProcessEngine):
                engine.on_restart = self.metrics.engine_restarts.inc
                engine.on_give_up = on_error
            # Everything loaded so far (torch, transformers, vLLM, the model) lives as long as the server:
            # freeze it out of the cyclic collector, whose full passes over that heap stall the event loop.
            gc.collect()
            gc.freeze()
            self.service = service
            log.info("model %s ready (%s), loaded in %.1f s", self.model_name, service.kind, time.monotonic() - started)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            log.error("model failed to load: %s", self.load_error)
            if on_error is not None:
                on_error(f"model failed to load: {self.load_error}")
        finally:
            heartbeat.cancel()
