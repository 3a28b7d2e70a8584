"""OpenTelemetry traces of what each request did: a span per HTTP request (named and attributed after the
OpenTelemetry GenAI conventions: model, token usage, time to first token, finish reasons), spans for an agent's
``predict`` / ``predict_stream``, for each LLM call it makes in process, and for the queue, prefill and decode
phases of every generation.

Off unless an OTLP endpoint is configured the standard way (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_ENDPOINT``, with ``OTEL_EXPORTER_OTLP_*_HEADERS``, ``_PROTOCOL``, ``OTEL_SERVICE_NAME``...;
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` keep it off) and the ``tracing`` extra installed.
While off, ``tracer()`` is None and every hook is one test of it.

A caller's ``traceparent`` is honoured (the request span is its child) and carried to everything the request
runs, agent threads included. Agents traced with MLflow (``@mlflow.trace``, ``mlflow.start_span``) write their
spans into the same trace: MLflow is told to use the global tracer provider, and finds its OTLP span processor
already there (so nothing is exported twice).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Optional

log = logging.getLogger("servelm.tracing")

_tracer: Any = None  # an opentelemetry Tracer while tracing is on
_configured = False

#: OpenTelemetry GenAI attribute names (semantic conventions for generative AI systems)
OPERATION, SYSTEM, REQUEST_MODEL, RESPONSE_MODEL = (
    "gen_ai.operation.name",
    "gen_ai.system",
    "gen_ai.request.model",
    "gen_ai.response.model",
)
INPUT_TOKENS, OUTPUT_TOKENS, FINISH_REASONS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.response.finish_reasons",
)
TTFT = "gen_ai.server.time_to_first_token"  # seconds, as the GenAI server metric of that name
REQUEST_ID = "servelm.request_id"  # the request's x-request-id


def tracing_wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint, and neither the SDK nor the exporter off."""
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").lower() in ("none", ""):
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def configure_tracing() -> bool:
    """Turn tracing on in this process when the environment asks for it (once; later calls return the
    answer). Without the extra installed, a warning says what to install and tracing stays off."""
    global _tracer, _configured
    if _configured:
        return _tracer is not None
    _configured = True
    if not tracing_wanted():
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        exporter = _exporter()
    except ImportError as exc:
        log.warning(
            "an OTLP endpoint is set but tracing needs servelm[tracing]: pip install 'servelm[tracing]' (%s)", exc
        )
        return False
    # MLflow-traced agents: their spans join this provider's traces instead of an isolated provider's; and MLflow
    # reads the protocol the OpenTelemetry spec defaults to (MLflow's own default is grpc).
    os.environ.setdefault("MLFLOW_USE_DEFAULT_TRACER_PROVIDER", "false")
    if not (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")):
        os.environ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] = "http/protobuf"
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # none set yet (an SDK provider set by the host is kept)
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "servelm")})
        provider = TracerProvider(resource=resource)
        trace.set_tracer_provider(provider)
    provider.add_span_processor(_processor(exporter))
    from servelm.agents import __version__

    _tracer = trace.get_tracer("servelm", __version__)
    log.info(
        "tracing on: spans go to %s",
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
    )
    return True


def _exporter() -> Any:
    """The OTLP span exporter the environment names (http/protobuf unless ``grpc``); it reads its endpoint,
    headers, timeout and compression from the ``OTEL_EXPORTER_OTLP_*`` variables itself."""
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


def _processor(exporter: Any) -> Any:
    """A batching span processor for ``exporter``. Where MLflow is installed it is MLflow's own OTLP processor
    (a BatchSpanProcessor that also registers traces for ``mlflow.update_current_trace``...): MLflow, set up later
    by an agent, then sees its processor in place and adds no second one."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    try:
        from mlflow.tracing.processor.otel import OtelSpanProcessor
    except Exception:  # MLflow absent (or a version without it): plain batching
        return BatchSpanProcessor(exporter)

    class MlflowAwareProcessor(OtelSpanProcessor):
        """MLflow's processor, for spans it was not written for: a span whose parent is a caller's (a remote
        ``traceparent``) starts its trace here, as a root does; and MLflow's bookkeeping failing never fails the
        span (nor the request it belongs to): the span is still exported."""

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            try:
                if span.parent is not None and span.parent.is_remote and self._should_register_traces:
                    if self._trace_manager.get_mlflow_trace_id_from_otel_id(span.context.trace_id) is None:
                        from mlflow.entities.span import create_mlflow_span

                        info = self._create_trace_info(span)
                        self._trace_manager.register_trace(span.context.trace_id, info)
                        self._trace_manager.register_span(create_mlflow_span(span, info.trace_id))
                        BatchSpanProcessor.on_start(self, span, parent_context)
                        return
                super().on_start(span, parent_context)
            except Exception:
                log.debug("MLflow's span bookkeeping failed for %s", getattr(span, "name", "?"), exc_info=True)
                BatchSpanProcessor.on_start(self, span, parent_context)

        def on_end(self, span: Any) -> None:
            try:
                if span.parent is not None and span.parent.is_remote and self._should_register_traces:
                    self._trace_manager.pop_trace(span.context.trace_id)
                    BatchSpanProcessor.on_end(self, span)
                    return
                super().on_end(span)
            except Exception:
                log.debug("MLflow's span bookkeeping failed for %s", getattr(span, "name", "?"), exc_info=True)
                BatchSpanProcessor.on_end(self, span)

    return MlflowAwareProcessor(exporter, export_metrics=False)


def tracer() -> Any:
    """The tracer while tracing is on, else None (the hooks' one test)."""
    return _tracer


# ---------------------------------------------------------------------------------- request spans
def start_request_span(headers: Any, method: str, path: str, request_id: str) -> tuple[Any, Any]:
    """The span of one HTTP request, child of the caller's ``traceparent`` if it sent one, made current:
    (span, token for ``end_request_span``)."""
    from opentelemetry import context, propagate, trace

    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in (b"traceparent", b"tracestate")}
    parent = propagate.extract(carrier) if carrier else None
    span = _tracer.start_span(
        f"{method} {path}",
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": method, "url.path": path, REQUEST_ID: request_id},
    )
    return span, context.attach(trace.set_span_in_context(span, parent))


def end_request_span(span: Any, token: Any, status: int, usage: dict[str, Any]) -> None:
    """End a request's span with what the request did: its status, model, token usage, TTFT, finish reasons."""
    from opentelemetry import context
    from opentelemetry.trace import StatusCode

    try:
        span.set_attribute("http.response.status_code", status)
        model = usage.get("model")
        if model:
            operation = usage.get("operation", "chat")
            span.update_name(f"{operation} {model}")
            span.set_attributes({OPERATION: operation, REQUEST_MODEL: model, RESPONSE_MODEL: model, SYSTEM: "servelm"})
        if "prompt" in usage:
            span.set_attributes({INPUT_TOKENS: usage["prompt"], OUTPUT_TOKENS: usage.get("completion", 0)})
        if status >= 500:
            span.set_status(StatusCode.ERROR, str(usage.get("error", status)))
        elif "error" in usage:
            span.set_attribute("error.type", str(status))
    finally:
        span.end()
        context.detach(token)


# ---------------------------------------------------------------------------------- spans around work
@contextmanager
def span(name: str, attributes: Optional[dict[str, Any]] = None, kind: str = "INTERNAL") -> Iterator[Any]:
    """A child span of the current one, current inside the block (None and no cost while tracing is off)."""
    if _tracer is None:
        yield None
        return
    from opentelemetry import trace

    with _tracer.start_as_current_span(name, kind=getattr(trace.SpanKind, kind), attributes=attributes) as current:
        yield current


def start_span(name: str, attributes: Optional[dict[str, Any]] = None, kind: str = "INTERNAL") -> Any:
    """A child span of the current one, not made current (for spans that cover a stream: a stream's steps run
    in other tasks' contexts); None while tracing is off."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    return _tracer.start_span(name, kind=getattr(trace.SpanKind, kind), attributes=attributes)


def context_with(span: Any) -> Any:
    """The current context with ``span`` as its current span (to run a stream's steps under it)."""
    from opentelemetry import context, trace

    return trace.set_span_in_context(span, context.get_current())


@contextmanager
def attached(ctx: Any) -> Iterator[None]:
    """``ctx`` current inside the block (one step of a stream)."""
    if ctx is None:
        yield
        return
    from opentelemetry import context

    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)


def fail(span: Any, exc: BaseException) -> None:
    """Mark ``span`` failed with ``exc`` (a client that went away is not a failure of the span)."""
    if span is None:
        return
    from opentelemetry.trace import StatusCode

    if isinstance(exc, Exception):
        span.record_exception(exc)
        span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
    else:
        span.set_attribute("servelm.cancelled", True)


# ---------------------------------------------------------------------------------- generation phases
def phase_spans(
    parent: Any, submitted: float, scheduled: Optional[float], first: Optional[float], ended: float, choice: int
) -> None:
    """The queue, prefill and decode phases of one generated sequence, as child spans of ``parent`` (a
    context), from wall-clock times in seconds: ``submitted`` to the engine, ``scheduled`` into a batch row (None
    where the engine does not say: the queue is then part of the prefill span), ``first`` token, ``ended``."""
    if _tracer is None:
        return
    begin = submitted
    attributes = {"servelm.choice": choice}
    if scheduled is not None and submitted <= scheduled <= (first or ended):
        _tracer.start_span("queue", context=parent, start_time=_ns(submitted), attributes=attributes).end(
            end_time=_ns(scheduled)
        )
        begin = scheduled
    prefill_end = first if first is not None else ended
    _tracer.start_span("prefill", context=parent, start_time=_ns(begin), attributes=attributes).end(
        end_time=_ns(prefill_end)
    )
    if first is not None:
        _tracer.start_span("decode", context=parent, start_time=_ns(first), attributes=attributes).end(
            end_time=_ns(ended)
        )


def generation_attributes(parent: Any, ttft: Optional[float], finish_reasons: list[str]) -> None:
    """What one generation tells the span it ran under (the request's, or the in-process LLM call's): its time to
    first token (seconds from its submission to the engine) and its sequences' finish reasons."""
    if _tracer is None or parent is None:
        return
    from opentelemetry import trace

    owner = trace.get_current_span(parent)
    if owner.is_recording():
        if ttft is not None:
            owner.set_attribute(TTFT, ttft)
        if finish_reasons:
            owner.set_attribute(FINISH_REASONS, finish_reasons)


def current_context() -> Any:
    """The current OpenTelemetry context (None while tracing is off)."""
    if _tracer is None:
        return None
    from opentelemetry import context

    return context.get_current()


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def now() -> float:
    """Wall-clock seconds (what spans and the engines' scheduling times are stamped with)."""
    return time.time()
