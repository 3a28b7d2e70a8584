"""Prometheus metrics of one server (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)  # seconds


class ServerMetrics:
    """Request counts by route and status, latencies (TTFT, ITL, end to end, queue), load and tokens."""

    def __init__(self, model_name: str = "") -> None:
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

    def render(self) -> bytes:
        """The text exposition format for GET /metrics."""
        return generate_latest(self.registry)
