"""Errors and limits: OpenAI-shaped bodies, the right status, named fields, overload before headers."""

import asyncio
import time

import httpx
import pytest
from openai import OpenAI

from conftest import running_server
from servelm.agents import ChatAgent, ChatAgentChunk, ChatAgentMessage, ChatAgentResponse


class Slow(ChatAgent):
    def __init__(self):
        self.closed = 0

    def predict(self, messages, context=None, custom_inputs=None):
        text = messages[-1].content
        if text == "boom":
            raise RuntimeError("agent exploded")
        if text.startswith("sleep"):
            time.sleep(float(text.split()[1]))
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content=text)])

    def predict_stream(self, messages, context=None, custom_inputs=None):
        try:
            for i in range(1000):
                if messages[-1].content == "fail-mid" and i == 2:
                    raise ValueError("broke mid-stream")
                time.sleep(0.02)
                yield ChatAgentChunk(delta=ChatAgentMessage(role="assistant", content=f"w{i} ", id="m"))
        finally:
            self.closed += 1


@pytest.fixture(scope="module")
def server():
    agent = Slow()
    with running_server(agent, api_key="sekret", max_concurrency=1, max_queue=0, max_body_bytes=10_000, timeout=2) as (base, app):
        yield base, app, agent


AUTH = {"Authorization": "Bearer sekret"}
MSG = {"messages": [{"role": "user", "content": "hi"}]}


def post(base, body=None, **kw):
    kw.setdefault("headers", AUTH)
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30, **kw)


def assert_error(resp, status, field_in_message=None):
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if field_in_message:
        assert field_in_message in error["message"], error


def test_auth(server):
    base, _, _ = server
    assert_error(post(base, MSG, headers={}), 401)
    assert_error(post(base, MSG, headers={"Authorization": "Bearer wrong"}), 401)
    assert_error(httpx.post(f"{base}/invocations", json=MSG), 401)
    assert httpx.get(f"{base}/health").status_code == 200  # health needs no key
    assert post(base, MSG).status_code == 200


def test_bad_inputs_name_the_field(server):
    base, _, _ = server
    assert_error(post(base, content=b"{not json", headers={**AUTH, "content-type": "application/json"}), 400, "not valid JSON")
    assert_error(post(base, {"messages": []}), 400, "messages")
    assert_error(post(base, {"messages": [{"role": "wizard", "content": "x"}]}), 400, "messages.0.role")
    assert_error(post(base, {"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}), 400, "temperature")
    assert_error(post(base, {}), 400, "messages: Field required")
    assert post(base, {"messages": [{"role": "user"}]}).json()["error"]["param"] == "messages.0"


def test_unknown_model_is_404(server):
    base, _, _ = server
    assert_error(post(base, {**MSG, "model": "gpt-9"}), 404, "gpt-9")


def test_payload_too_large(server):
    base, _, _ = server
    assert_error(post(base, {"messages": [{"role": "user", "content": "x" * 20_000}]}), 413)


def test_agent_exception_is_500_and_server_keeps_serving(server):
    base, _, _ = server
    assert_error(post(base, {"messages": [{"role": "user", "content": "boom"}]}), 500, "agent exploded")
    assert post(base, MSG).json()["choices"][0]["message"]["content"] == "hi"


def test_timeout_is_504(server):
    base, _, _ = server
    assert_error(post(base, {"messages": [{"role": "user", "content": "sleep 3"}]}), 504)
    time.sleep(1.2)  # let the abandoned worker thread finish


def test_overload_is_429_before_any_bytes(server):
    base, app, _ = server
    body = {"messages": [{"role": "user", "content": "long"}], "stream": True}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, headers=AUTH, timeout=30) as first:
        assert first.status_code == 200
        lines = first.iter_lines()  # keep a reference: a dropped iterator closes the stream
        next(lines)
        refused = post(base, MSG)
        assert_error(refused, 429)
        assert refused.headers["retry-after"] == "1"
    deadline = time.monotonic() + 5
    while app.state.servelm.admission.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert app.state.servelm.admission.running == 0


def test_error_after_stream_start_is_an_event(server):
    base, _, _ = server
    client = OpenAI(base_url=f"{base}/v1", api_key="sekret", max_retries=0)
    stream = client.chat.completions.create(model="Slow", messages=[{"role": "user", "content": "fail-mid"}], stream=True)
    seen = []
    with pytest.raises(Exception, match="broke mid-stream"):
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content)
    assert seen[:2] == ["w0 ", "w1 "]


def test_disconnect_closes_generator_and_frees_slot(server):
    base, app, agent = server
    before = agent.closed
    body = {"messages": [{"role": "user", "content": "long"}], "stream": True}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, headers=AUTH, timeout=30) as resp:
        lines = resp.iter_lines()
        next(lines)
        next(lines)
    deadline = time.monotonic() + 5
    while (agent.closed == before or app.state.servelm.admission.running) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert agent.closed == before + 1
    assert app.state.servelm.admission.running == 0
    assert post(base, MSG).status_code == 200


def test_metrics(server):
    base, _, _ = server
    text = httpx.get(f"{base}/metrics").text
    assert 'servelm_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert 'status="401"' in text and 'status="429"' in text
    for name in ("servelm_time_to_first_token_seconds_count", "servelm_inter_token_latency_seconds_count", "servelm_e2e_request_latency_seconds_count",
                 "servelm_request_queue_time_seconds_count", "servelm_num_requests_running", "servelm_num_requests_waiting",
                 "servelm_prompt_tokens_total", "servelm_generation_tokens_total"):
        assert name in text, name


def test_health_ping_version_models(server):
    base, _, _ = server
    assert httpx.get(f"{base}/ping").text == "\n"
    assert httpx.get(f"{base}/version").status_code == 200
    assert httpx.get(f"{base}/v1/models", headers=AUTH).json()["data"][0]["id"] == "Slow"


def test_health_is_503_until_loaded(tmp_path):
    from servelm.serving import create_app
    from starlette.testclient import TestClient

    app = create_app(str(tmp_path / "does-not-exist"))
    with TestClient(app) as client:
        deadline = time.monotonic() + 5
        while app.state.servelm.load_error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        resp = client.get("/health")
        assert resp.status_code == 503 and "not a directory" in resp.json()["detail"]
        assert client.post("/v1/chat/completions", json=MSG).status_code == 503


class AsyncSlow(ChatAgent):
    def __init__(self):
        self.cancelled = 0

    async def apredict(self, messages, context=None, custom_inputs=None):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content="late")])


def test_disconnect_cancels_non_streamed_async_work():
    agent = AsyncSlow()
    with running_server(agent) as (base, app):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base}/v1/chat/completions", json=MSG, timeout=0.3)
        deadline = time.monotonic() + 3
        while (not agent.cancelled or app.state.servelm.admission.running) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert agent.cancelled == 1 and app.state.servelm.admission.running == 0
        text = httpx.get(f"{base}/metrics").text
        assert 'status="499"' in text
