"""Prometheus metrics of a server: requests by route and status, latencies, load and tokens."""

import httpx


def test_metrics(limited_server, post_chat, chat_body, auth, wait_until):
    base, app, _ = limited_server
    assert post_chat(base, chat_body).status_code == 200
    assert post_chat(base, chat_body, headers={}).status_code == 401
    with httpx.stream(
        "POST", f"{base}/v1/chat/completions", json={**chat_body, "stream": True}, headers=auth, timeout=120
    ) as first:
        lines = first.iter_lines()
        next(lines)
        assert post_chat(base, chat_body).status_code == 429  # one running, no queue
    wait_until(lambda: not app.state.servelm.admission.running)
    text = httpx.get(f"{base}/metrics").text
    assert 'servelm_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert 'status="401"' in text and 'status="429"' in text
    for name in (
        "servelm_time_to_first_token_seconds_count",
        "servelm_inter_token_latency_seconds_count",
        "servelm_e2e_request_latency_seconds_count",
        "servelm_request_queue_time_seconds_count",
        "servelm_num_requests_running",
        "servelm_num_requests_waiting",
        "servelm_prompt_tokens_total",
        "servelm_generation_tokens_total",
    ):
        assert name in text, name


def test_each_server_has_its_own_registry():
    from servelm.serving.metrics import ServerMetrics

    a, b = ServerMetrics(), ServerMetrics()
    a.requests.labels(route="/health", status="200").inc()
    assert a.registry.get_sample_value("servelm_requests_total", {"route": "/health", "status": "200"}) == 1
    assert b.registry.get_sample_value("servelm_requests_total", {"route": "/health", "status": "200"}) is None
    assert b"servelm_num_requests_running" in b.render()


def test_routes_are_counted_under_a_root_path():
    """Mounted under a prefix (a Ray Serve route_prefix, uvicorn --root-path), requests count by their route."""
    from fastapi.testclient import TestClient

    from servelm.agents import PythonModel
    from servelm.serving import create_app

    class Echo(PythonModel):
        def predict(self, context, model_input):
            return model_input

    app = create_app(Echo(), served_model_name="echo")
    with TestClient(app, root_path="/prefix") as client:
        assert client.get("/prefix/version").status_code == 200
    registry = app.state.servelm.metrics.registry
    assert registry.get_sample_value("servelm_requests_total", {"route": "/version", "status": "200"}) == 1
