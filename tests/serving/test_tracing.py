"""Traces as a real MLflow server receives them: servelm (a real ``servelm serve`` of an agent and its LLM, tracing
configured by the standard OTEL_* variables) exports OTLP spans to ``mlflow server``'s traces endpoint, and
``MlflowClient().search_traces`` returns one trace per request: request -> agent predict -> LLM calls (with the
agent's own MLflow-traced tool span between them) -> queue / prefill / decode, with token counts; a caller's
``traceparent`` is honoured; with tracing off, no span is made."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("mlflow")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")

AGENT = '''
import json

import mlflow
from mlflow.entities import SpanType

from servelm.agents import ResponsesAgent, ResponsesAgentResponse, ResponsesAgentStreamEvent, llm_client
from servelm.flavors import set_model

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
            "required": ["city"],
        },
    },
}]


@mlflow.trace(span_type=SpanType.TOOL, name="get_weather")
def get_weather(city):
    return f"sunny in {city}"


class WeatherAgent(ResponsesAgent):
    """Asks the LLM which tool to call (forced), runs it, then streams the LLM's answer with the tool's result."""

    def load_context(self, context):
        self.llm = context.model_config["llm"]

    def _answer(self, request, stream):
        client = llm_client(self.llm)
        messages = [{"role": "user", "content": request.input[-1].text()}]
        first = client.chat.completions.create(
            messages=messages, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=200, temperature=0,
        )
        call = first.choices[0].message.tool_calls[0]
        result = get_weather(json.loads(call.function.arguments).get("city", ""))
        messages += [
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": result},
        ]
        return client.chat.completions.create(messages=messages, max_tokens=6, temperature=0, stream=stream,
                                              extra_body={"ignore_eos": True})

    def predict(self, request):
        answer = self._answer(request, stream=False)
        text = answer.choices[0].message.content
        return ResponsesAgentResponse(output=[self.create_text_output_item(text=text, id="m")])

    def predict_stream(self, request):
        for chunk in self._answer(request, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                delta = chunk.choices[0].delta.content
                yield ResponsesAgentStreamEvent(**self.create_text_delta(delta=delta, item_id="m"))


set_model(WeatherAgent())
'''


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Any:
    """A real ``mlflow server`` on loopback with a sqlite backend: (its URL, the process)."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log = open(folder / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
         "--default-artifact-root", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, cwd=folder,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(
            lambda: _ok(f"{url}/health"),
            120,
            f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}",
        )
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


@pytest.fixture(scope="module")
def agent_dir(tmp_path_factory) -> str:
    from servelm.flavors.pyfunc import save_model

    folder = tmp_path_factory.mktemp("weather-agent")
    (folder / "weather_agent.py").write_text(AGENT)
    path = str(folder / "agent")
    save_model(path, python_model=str(folder / "weather_agent.py"), model_config={"llm": "tiny"})
    return path


@pytest.fixture(scope="module")
def weather_dir(tmp_path_factory) -> str:
    """The README's example agent (examples/weather_agent.py), calling the tiny LLM."""
    from servelm.flavors.pyfunc import save_model

    path = str(tmp_path_factory.mktemp("example") / "weather")
    save_model(path, python_model=str(EXAMPLES / "weather_agent.py"), model_config={"llm": "tiny"})
    return path


@pytest.fixture(scope="module")
def traced_server(mlflow_server, agent_dir, weather_dir, tiny_llama_dir, tmp_path_factory) -> Any:
    """``servelm serve -m agent -m weather -m tiny=...`` exporting its traces to the MLflow server's experiment 0."""
    folder = tmp_path_factory.mktemp("traced")
    port = _free_port()
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{mlflow_server}/v1/traces",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-mlflow-experiment-id=0",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # ms between exports (the default 5 s only slows the test)
        "OTEL_SERVICE_NAME": "servelm-test",
    }
    log = open(folder / "serve.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "servelm.serving.cli", "serve", "-m", agent_dir, "-m", weather_dir,
         "-m", f"tiny={tiny_llama_dir}", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(
            lambda: _ok(f"{base}/health"), 300, f"servelm did not start: {(folder / 'serve.log').read_text()[-3000:]}"
        )
        yield base
    finally:
        process.terminate()
        process.wait(60)
        log.close()


def _tree(trace: Any) -> dict[str, list[str]]:
    """Each span's name -> its children's names, in start order."""
    spans = sorted(trace.data.spans, key=lambda s: s.start_time_ns)
    names = {s.span_id: s.name for s in spans}
    children: dict[str, list[str]] = {s.name: [] for s in spans}
    for s in spans:
        if s.parent_id in names:
            children[names[s.parent_id]].append(s.name)
    return children


def _search(mlflow_server: str, request_id: str) -> Any:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    found: list[Any] = []

    def look() -> bool:
        found[:] = [
            t
            for t in client.search_traces(locations=["0"], max_results=100)
            if any(s.attributes.get("servelm.request_id") == request_id for s in t.data.spans)
        ]
        spans = found[0].data.spans if found else []
        return (
            len(found) == 1
            and sum(s.name in ("decode", "prefill") for s in spans) >= 2
            and any(s.name == "get_weather" for s in spans)
        )

    _wait(look, 60, f"no complete trace for request {request_id}: {found}")
    return found[0]


@pytest.mark.parametrize("stream", [False, True], ids=["predict", "predict_stream"])
def test_one_trace_per_request_with_the_whole_tree(stream, traced_server, mlflow_server):
    request_id = f"trace-test-{stream}"
    body = {"model": "agent", "input": "weather in Paris?", "stream": stream}
    with httpx.stream(
        "POST", f"{traced_server}/v1/responses", json=body, headers={"x-request-id": request_id}, timeout=120
    ) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["x-request-id"] == request_id
        r.read()
    trace = _search(mlflow_server, request_id)
    tree = _tree(trace)
    predict = "predict_stream" if stream else "predict"
    assert tree["invoke_agent agent"] == [predict], tree
    assert tree[predict] == ["chat tiny", "get_weather", "chat tiny"], tree
    calls = [s for s in trace.data.spans if s.name == "chat tiny"]
    phases = sorted(
        (s for s in trace.data.spans if s.name in ("queue", "prefill", "decode")), key=lambda s: s.start_time_ns
    )
    assert {s.parent_id for s in phases} == {c.span_id for c in calls}
    assert [s.name for s in phases if s.parent_id == calls[0].span_id] in (
        ["queue", "prefill", "decode"],
        ["prefill", "decode"],
    )
    root = next(s for s in trace.data.spans if s.name == "invoke_agent agent")
    assert root.attributes["gen_ai.request.model"] == "agent" and root.attributes["http.response.status_code"] == 200
    # token counts: each LLM call's, and the request's (the sum of its LLM calls')
    assert all(0 < c.attributes["gen_ai.server.time_to_first_token"] < 60 for c in calls)
    second = max(calls, key=lambda s: s.start_time_ns)
    assert second.attributes["gen_ai.usage.output_tokens"] == 6
    inputs = sum(c.attributes["gen_ai.usage.input_tokens"] for c in calls)
    assert root.attributes["gen_ai.usage.input_tokens"] == inputs and inputs > 0
    assert root.attributes["gen_ai.usage.output_tokens"] == sum(
        c.attributes["gen_ai.usage.output_tokens"] for c in calls
    )
    assert trace.info.token_usage and trace.info.token_usage["output_tokens"] >= 6, trace.info.token_usage


def test_an_openai_agents_run_shows_the_tool_call_and_the_llm_calls_in_one_trace(traced_server, mlflow_server):
    """openai-agents' Runner with servelm's weather agent as its model: the agent's own tool call (answered inside
    the agent, so not handed to the Runner as one to run) and both its LLM calls are one trace."""
    import asyncio

    from openai import AsyncOpenAI

    from agents import Agent, OpenAIChatCompletionsModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)  # openai-agents' own tracing exports to OpenAI's platform
    client = AsyncOpenAI(
        base_url=f"{traced_server}/v1", api_key="unused", default_headers={"x-request-id": "openai-agents-run"}
    )
    agent = Agent(name="assistant", model=OpenAIChatCompletionsModel(model="weather", openai_client=client))
    result = asyncio.run(Runner.run(agent, "What is the weather in Paris?"))
    assert result.final_output
    from mlflow import MlflowClient

    traces: list[Any] = []

    def look() -> bool:
        traces[:] = [
            t
            for t in MlflowClient(tracking_uri=mlflow_server).search_traces(locations=["0"], max_results=100)
            if any(s.attributes.get("servelm.request_id") == "openai-agents-run" for s in t.data.spans)
        ]
        return len(traces) == 1 and sum(s.name == "decode" for s in traces[0].data.spans) == 2

    _wait(look, 60, "no complete trace of the openai-agents run")
    tree = _tree(traces[0])
    assert tree["invoke_agent weather"] == ["predict"], tree
    assert tree["predict"] == ["chat tiny", "execute_tool get_weather", "chat tiny"], tree


def test_a_callers_traceparent_is_honoured(traced_server, mlflow_server):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01", "x-request-id": "with-parent"}
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    assert httpx.post(f"{traced_server}/v1/chat/completions", json=body, headers=headers, timeout=60).status_code == 200
    spans = _spans_of(mlflow_server, "with-parent")
    request = spans[0]
    assert request.name == "chat tiny" and request.parent_id == "00f067aa0ba902b7"
    assert request._span.context.trace_id == int(trace_id, 16)


def test_an_agent_elsewhere_passes_its_trace_on(traced_server, mlflow_server):
    """The same agent code run outside servelm (``llm_client`` over HTTP) sends its current trace along: servelm's
    request span is a child of the agent's span."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from servelm.agents import llm_client

    span = TracerProvider().get_tracer("agent-elsewhere").start_span("agent step")
    with trace.use_span(span, end_on_exit=True):
        client = llm_client("tiny", base_url=f"{traced_server}/v1")
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2,
            extra_headers={"x-request-id": "from-elsewhere"},
        )  # fmt: skip
    found = _spans_of(mlflow_server, "from-elsewhere")
    assert found[0].parent_id == format(span.get_span_context().span_id, "016x")
    assert found[0]._span.context.trace_id == span.get_span_context().trace_id


def _spans_of(mlflow_server: str, request_id: str) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    spans: list[Any] = []

    def look() -> bool:
        spans[:] = [
            s
            for t in client.search_traces(locations=["0"], max_results=100)
            for s in t.data.spans
            if s.attributes.get("servelm.request_id") == request_id
        ]
        return bool(spans)

    _wait(look, 60, f"no span of request {request_id} arrived")
    return spans


def test_tracing_is_off_without_an_endpoint(monkeypatch):
    from servelm.serving.tracing import tracing_wanted

    assert not tracing_wanted({})
    assert tracing_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert not tracing_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"})
    assert not tracing_wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"})


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(condition: Any, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(message() if callable(message) else message)


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
