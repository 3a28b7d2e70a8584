"""An agent and its LLM in one server: the agent's ``llm_client`` calls the LLM in process (chat, streaming,
Responses; sync and async agents), its calls go through the LLM's admission, a disconnect aborts them (the
engine row is freed), and the same agent code reaches the LLM over HTTP when run on its own."""

from __future__ import annotations

import time

import httpx
import pytest

AGENT = '''
from servelm.agents import (
    ResponsesAgent, ResponsesAgentResponse, ResponsesAgentStreamEvent, async_llm_client, llm_client,
)
from servelm.flavors import set_model


class LLMAgent(ResponsesAgent):
    """Asks its LLM (named in model_config) and streams the answer; ``custom_inputs.mode`` picks the call."""

    def load_context(self, context):
        self.llm = context.model_config["llm"]

    def _messages(self, request):
        return [{"role": "user", "content": request.input[-1].text()}]

    def predict(self, request):
        client = llm_client(self.llm)
        mode = (request.custom_inputs or {}).get("mode", "chat")
        if mode == "responses":
            answer = client.responses.create(input=request.input[-1].text(), max_output_tokens=4, temperature=0)
            text = answer.output_text
        else:
            max_tokens = (request.custom_inputs or {}).get("max_tokens", 4)
            answer = client.chat.completions.create(
                messages=self._messages(request), max_tokens=max_tokens, temperature=0, extra_body={"ignore_eos": True}
            )
            text = answer.choices[0].message.content
        return ResponsesAgentResponse(output=[self.create_text_output_item(text=text, id="msg-1")])

    def predict_stream(self, request):
        client = llm_client(self.llm)
        max_tokens = (request.custom_inputs or {}).get("max_tokens", 8)
        stream = client.chat.completions.create(
            messages=self._messages(request), max_tokens=max_tokens, temperature=0, stream=True,
            extra_body={"ignore_eos": True},
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield ResponsesAgentStreamEvent(
                    **self.create_text_delta(delta=chunk.choices[0].delta.content, item_id="msg-1")
                )


class AsyncLLMAgent(LLMAgent):
    async def apredict(self, request):
        client = async_llm_client(self.llm)
        max_tokens = (request.custom_inputs or {}).get("max_tokens", 4)
        answer = await client.chat.completions.create(
            messages=self._messages(request), max_tokens=max_tokens, temperature=0, extra_body={"ignore_eos": True}
        )
        return ResponsesAgentResponse(
            output=[self.create_text_output_item(text=answer.choices[0].message.content, id="msg-1")]
        )

    async def apredict_stream(self, request):
        client = async_llm_client(self.llm)
        max_tokens = (request.custom_inputs or {}).get("max_tokens", 8)
        stream = await client.chat.completions.create(
            messages=self._messages(request), max_tokens=max_tokens, temperature=0, stream=True,
            extra_body={"ignore_eos": True},
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield ResponsesAgentStreamEvent(
                    **self.create_text_delta(delta=chunk.choices[0].delta.content, item_id="msg-1")
                )


set_model(AsyncLLMAgent() if __import__("os").environ.get("AGENT_ASYNC") else LLMAgent())
'''


@pytest.fixture(scope="module")
def agent_dir(tmp_path_factory) -> str:
    from servelm.flavors.pyfunc import save_model

    folder = tmp_path_factory.mktemp("agent")
    code = folder / "llm_agent.py"
    code.write_text(AGENT)
    path = str(folder / "agent")
    save_model(path, python_model=str(code), model_config={"llm": "tiny"})
    return path


def _models(agent_dir: str, tiny_llama_dir: str, **llm: object) -> list[dict]:
    return [{"model": agent_dir, "name": "agent"}, {"model": tiny_llama_dir, "name": "tiny", **llm}]


def _assert_llm_call_aborted(base: str, app, wait_until) -> None:
    """The agent's LLM call ended with its request: engine row and admission slot freed, and counted as vLLM's
    finished_reason "abort" (not ended by its 2000 tokens)."""
    engine = app.state.servelm.models["tiny"].service.engine
    assert wait_until(lambda: not engine.requests._open and not engine.has_work(), timeout=30)
    assert wait_until(lambda: app.state.servelm.models["tiny"].admission.running == 0, timeout=10)
    assert _aborted(base) == 1


def _aborted(base: str) -> float:
    """The LLM's requests that ended aborted, as /metrics counts them (vLLM's finished_reason "abort")."""
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith('vllm:request_success_total{finished_reason="abort",model_name="tiny"}'):
            return float(line.split()[-1])
    return 0.0


def _llm_rows_busy(app) -> bool:
    engine = app.state.servelm.models["tiny"].service.engine
    return bool(engine.requests._open)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync-agent", "async-agent"])
def test_an_agent_calls_its_llm_in_process(
    asynchronous, agent_dir, tiny_llama_dir, serve, openai_client, sse_lines, monkeypatch, wait_until
):
    if asynchronous:
        monkeypatch.setenv("AGENT_ASYNC", "1")
    with serve(_models(agent_dir, tiny_llama_dir)) as (base, app):
        assert [m["id"] for m in httpx.get(f"{base}/v1/models").json()["data"]] == ["agent", "tiny"]
        client = openai_client(base)
        # both names answer
        direct = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0
        )
        through_agent = client.responses.create(model="agent", input="hi")
        assert through_agent.output_text == direct.choices[0].message.content
        if not asynchronous:
            via_responses = client.responses.create(
                model="agent", input="hi", extra_body={"custom_inputs": {"mode": "responses"}}
            )
            assert via_responses.output_text == direct.choices[0].message.content
        # the agent's LLM stream passes through token by token
        events = [e for e in client.responses.create(model="agent", input="hi", stream=True)]
        deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
        assert len(deltas) >= 2, events
        metrics = httpx.get(f"{base}/metrics").text
        assert 'vllm:request_success_total{finished_reason="length",model_name="tiny"}' in metrics, metrics
        assert 'vllm:time_to_first_token_seconds_count{model_name="tiny"}' in metrics
        assert 'vllm:num_requests_running{model_name="agent"}' in metrics
        wait_until(lambda: not _llm_rows_busy(app))


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync-agent", "async-agent"])
def test_a_disconnect_aborts_the_agents_llm_calls(
    asynchronous, agent_dir, tiny_llama_dir, serve, monkeypatch, wait_until
):
    if asynchronous:
        monkeypatch.setenv("AGENT_ASYNC", "1")
    with serve(_models(agent_dir, tiny_llama_dir)) as (base, app):
        engine = app.state.servelm.models["tiny"].service.engine
        body = {
            "model": "agent",
            "input": "hi",
            "stream": True,
            "custom_inputs": {"max_tokens": 2000},  # far longer than the test waits
        }
        with httpx.stream("POST", f"{base}/v1/responses", json=body, timeout=60) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            while "output_text.delta" not in next(lines):
                pass
            assert engine.requests._open  # the agent's LLM call is generating
        # the client went away: the agent's stream is closed, and with it its LLM call
        _assert_llm_call_aborted(base, app, wait_until)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync-agent", "async-agent"])
def test_a_disconnect_aborts_a_non_streamed_agents_llm_call(
    asynchronous, agent_dir, tiny_llama_dir, serve, monkeypatch, wait_until
):
    if asynchronous:
        monkeypatch.setenv("AGENT_ASYNC", "1")
    import json
    import socket

    with serve(_models(agent_dir, tiny_llama_dir)) as (base, app):
        engine = app.state.servelm.models["tiny"].service.engine
        body = json.dumps({"model": "agent", "input": "hi", "custom_inputs": {"max_tokens": 2000}}).encode()
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as client:
            client.sendall(
                b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            assert wait_until(lambda: bool(engine.requests._open), timeout=30)  # the agent's LLM call generates
        # the client went away before the answer: the agent's request ends, and with it its LLM call
        _assert_llm_call_aborted(base, app, wait_until)


def test_the_same_agent_reaches_its_llm_over_http_on_its_own(agent_dir, tiny_llama_dir, serve, monkeypatch):
    from servelm.agents import ResponsesAgentRequest
    from servelm.flavors.pyfunc import load_model

    with serve(tiny_llama_dir) as (base, _):
        monkeypatch.setenv("OPENAI_BASE_URL", f"{base}/v1")
        agent = load_model(agent_dir).served_model()
        answer = agent.predict(ResponsesAgentRequest(input=[{"role": "user", "content": "hi"}]))
        direct = httpx.post(
            f"{base}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0},
        ).json()
        assert answer.output[0].content[0]["text"] == direct["choices"][0]["message"]["content"]


def test_an_agent_whose_llm_is_not_served_does_not_start(agent_dir, serve):
    reasons: list[str] = []
    with serve(agent_dir, healthy=False, on_load_error=reasons.append) as (base, _):
        deadline = time.monotonic() + 60
        while not reasons and time.monotonic() < deadline:
            time.sleep(0.05)
    assert reasons and "calls the LLM `tiny`" in reasons[0] and "-m tiny=" in reasons[0]


def test_llm_calls_take_the_llms_admission_slots(agent_dir, tiny_llama_dir, serve, wait_until):
    """The LLM's limits hold for the agent's calls: with one slot, a direct request waits for the agent's call."""
    models = _models(agent_dir, tiny_llama_dir, max_concurrency=1, max_queue=0)
    with serve(models) as (base, app):
        llm = app.state.servelm.models["tiny"]
        body = {"model": "agent", "input": "hi", "stream": True, "custom_inputs": {"max_tokens": 2000}}
        with httpx.stream("POST", f"{base}/v1/responses", json=body, timeout=60) as response:
            lines = response.iter_lines()
            while "output_text.delta" not in next(lines):
                pass
            assert llm.admission.running == 1
            refused = httpx.post(
                f"{base}/v1/chat/completions",
                json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            )
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert wait_until(lambda: llm.admission.running == 0, timeout=30)


def test_a_sync_client_on_the_event_loop_says_to_use_the_async_one(agent_dir, tiny_llama_dir, serve, wait_until):
    import asyncio

    import openai

    from servelm.agents import llm_client

    with serve(_models(agent_dir, tiny_llama_dir)) as (_, app):
        loop = app.state.servelm.loop
        client = llm_client("tiny")
        result: dict = {}

        async def on_loop() -> None:
            try:
                client.chat.completions.create(messages=[{"role": "user", "content": "hi"}], max_tokens=2)
            except RuntimeError as exc:
                result["error"] = str(exc)

        asyncio.run_coroutine_threadsafe(on_loop(), loop).result(30)
        assert "async_llm_client" in result["error"]
        # from a thread it answers, with the openai package's types
        answer = client.chat.completions.create(messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert type(answer).__name__ == "ChatCompletion" and answer.model == "tiny" and answer.usage.completion_tokens
        # the Responses API, streamed: the openai package's event types, ending with the response (cut by its limit
        # unless the model ended first)
        events = list(client.responses.create(input="hi", max_output_tokens=3, stream=True))
        assert events[0].type == "response.created" and type(events[0]).__name__ == "ResponseCreatedEvent"
        assert events[-1].type in ("response.incomplete", "response.completed")
        assert events[-1].response.usage.output_tokens <= 3
        # a call's timeout is honoured, as the openai client's: APITimeoutError, and the generation is stopped
        long = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2000, "extra_body": {"ignore_eos": True}}
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(**long, timeout=0.2)
        with pytest.raises(openai.APITimeoutError):  # a stream: the wait for each chunk
            for _ in client.chat.completions.create(**long, stream=True, timeout=httpx.Timeout(60, read=1e-6)):
                pass
        assert wait_until(lambda: not _llm_rows_busy(app), timeout=30)
        # a bad request raises what the openai client raises for a 400
        with pytest.raises(openai.BadRequestError, match="maximum context length"):
            client.chat.completions.create(messages=[{"role": "user", "content": "hi"}], max_tokens=10**9)
