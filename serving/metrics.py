"""Prometheus metrics of one server (its own registry, so several apps can live in one process): servelm's own
names, and per model the names vLLM exports (``vllm:time_to_first_token_seconds``...), which existing Grafana
dashboards read."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)  # seconds
# vLLM's buckets (vllm/v1/metrics/loggers.py), so dashboards' quantiles read alike
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0)
_TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0)
_REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0)
_TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)


class ServerMetrics:
    """Request counts by route and status, latencies (TTFT, ITL, end to end, queue), load and tokens; and
    ``model(name)``: one model's metrics under vLLM's names."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "servelm_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.ttft = Histogram(
            "servelm_time_to_first_token_seconds",
            "Time to first streamed token or chunk",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "servelm_inter_token_latency_seconds", "Time between streamed chunks", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.e2e = Histogram(
            "servelm_e2e_request_latency_seconds", "End-to-end request latency", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.queue_time = Histogram(
            "servelm_request_queue_time_seconds",
            "Time spent waiting for a running slot",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.running = Gauge("servelm_num_requests_running", "Requests running now", registry=r)
        self.waiting = Gauge("servelm_num_requests_waiting", "Requests waiting for a slot", registry=r)
        self.prompt_tokens = Counter("servelm_prompt_tokens", "Prompt tokens processed", registry=r)
        self.generation_tokens = Counter("servelm_generation_tokens", "Tokens generated", registry=r)
        self.engine_restarts = Counter(
            "servelm_engine_restarts", "Times the engine process was restarted after it died", registry=r
        )
        self.batch_size = Histogram(
            "servelm_batch_size",
            "Sequences per engine step or predict batch",
            buckets=(1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256),
            registry=r,
        )
        self._vllm = _VllmFamilies(r)

    def model(self, name: str) -> ModelMetrics:
        """One model's metrics, labelled ``model_name=name`` as vLLM labels them."""
        return ModelMetrics(self._vllm, name)

    def render(self) -> bytes:
        """The text exposition format for GET /metrics."""
        return generate_latest(self.registry)


class _VllmFamilies:
    """The metric families vLLM exports, labelled by model (its ``vllm:`` names, help and buckets)."""

    def __init__(self, r: CollectorRegistry) -> None:
        label = ["model_name"]
        self.running = Gauge(
            "vllm:num_requests_running", "Number of requests in model execution batches.", label, registry=r
        )
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed.", label, registry=r
        )
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", label, registry=r)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Number of generation tokens processed.", label, registry=r
        )
        self.success = Counter(
            "vllm:request_success", "Count of successfully processed requests.", [*label, "finished_reason"], registry=r
        )

        def histogram(name: str, description: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, description, label, buckets=buckets, registry=r)

        self.request_prompt_tokens = histogram(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", _TOKEN_BUCKETS
        )
        self.request_generation_tokens = histogram(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", _TOKEN_BUCKETS
        )
        self.ttft = histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", _TTFT_BUCKETS
        )
        self.tpot = histogram(
            "vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.", _TPOT_BUCKETS
        )
        self.itl = histogram(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", _TPOT_BUCKETS
        )
        self.e2e = histogram(
            "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", _REQUEST_BUCKETS
        )
        self.queue = histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            _REQUEST_BUCKETS,
        )
        self.prefill = histogram(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            _REQUEST_BUCKETS,
        )
        self.decode = histogram(
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            _REQUEST_BUCKETS,
        )


class ModelMetrics:
    """One model's children of the vLLM-named families (bound once: observing costs no label lookup)."""

    def __init__(self, families: _VllmFamilies, name: str) -> None:
        self.name = name
        self._success = families.success
        f = families
        self.running, self.waiting = (g.labels(model_name=name) for g in (f.running, f.waiting))
        self.prompt_tokens, self.generation_tokens = (
            c.labels(model_name=name) for c in (f.prompt_tokens, f.generation_tokens)
        )
        self.request_prompt_tokens = f.request_prompt_tokens.labels(model_name=name)
        self.request_generation_tokens = f.request_generation_tokens.labels(model_name=name)
        self.ttft, self.tpot, self.itl, self.e2e = (h.labels(model_name=name) for h in (f.ttft, f.tpot, f.itl, f.e2e))
        self.queue, self.prefill, self.decode = (h.labels(model_name=name) for h in (f.queue, f.prefill, f.decode))
        self._finished: dict[str, Counter] = {}

    def finished(self, reason: str) -> None:
        """Count one request that ended with ``reason`` (stop, length, abort, tool_calls...)."""
        child = self._finished.get(reason)
        if child is None:
            child = self._finished[reason] = self._success.labels(model_name=self.name, finished_reason=reason)
        child.inc()
