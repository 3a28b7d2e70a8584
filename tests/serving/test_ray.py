"""servelm on Ray Serve (servelm.serving.ray), against a real local Ray (``ray.init(num_cpus=2)``) started once
for the session: the openai client through Ray's proxy, replicas, auth and errors, a disconnect that frees the
engine row, readiness, autoscaling. Runs where ray[serve] is installed (scripts/test-scale.sh makes that venv)."""

import importlib.util
import os
import re
import shutil
import threading
import time

import httpx
import pytest

if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.serve") is None:
    pytest.skip(
        "ray[serve] is not installed in this environment (CI runs these tests in the venv of scripts/test-scale.sh)",
        allow_module_level=True,
    )

from ray import serve  # noqa: E402

from servelm.flavors.pyfunc import save_model  # noqa: E402
from servelm.serving.options import EngineOptions, ServerOptions  # noqa: E402
from servelm.serving.ray import REPLICA_HEADER, ServelmAppArgs, build_app, deployment_options  # noqa: E402
from servelm.serving.ray import app as app_builder

CPUS = {"num_cpus": 0.25}  # replicas of several applications share the two CPUs Ray is given


@pytest.fixture(scope="session")
def ray_base():
    """A local Ray with Serve's proxy on loopback: its base URL. Autoscaling metrics are pushed every 0.5 s
    (10 s by default), so an upscale takes seconds. Serve's proxy dies at start when another process takes
    the free port first (a busy machine): it is started again on another, up to three times."""
    import ray
    from ray.exceptions import RayError

    from servelm.serving.demo import free_port

    os.environ.update(
        {
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
            "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
        }
    )
    ray.init(
        num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False, logging_level="warning"
    )
    for attempt in range(3):
        port = free_port()
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            break
        except RayError:
            serve.shutdown()
            if attempt == 2:
                ray.shutdown()
                raise
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="session")
def echo_dir(tmp_path_factory, write_code, chat_agent_source):
    """The echo ChatAgent saved as a directory named ``echo``."""
    root = tmp_path_factory.mktemp("ray-echo")
    path = str(root / "echo")
    save_model(path, python_model=write_code(root, "echo_agent.py", chat_agent_source))
    return path


@pytest.fixture(scope="session")
def echo_app(ray_base, echo_dir):
    """The echo agent on two replicas at /echo, behind an API key."""
    serve.run(
        build_app(echo_dir, num_replicas=2, ray_actor_options=CPUS, api_key="secret"), name="echo", route_prefix="/echo"
    )
    return f"{ray_base}/echo"


@pytest.fixture(scope="session")
def tiny_app(ray_base, tiny_llama_dir):
    """The tiny Llama (transformers engine, in its engine process) on one replica at /tiny."""
    serve.run(build_app(tiny_llama_dir, ray_actor_options=CPUS, max_num_seqs=8), name="tiny", route_prefix="/tiny")
    return f"{ray_base}/tiny"


def metric(base, name, headers=None):
    text = httpx.get(f"{base}/metrics", headers=headers or {}, timeout=120).text
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


# ------------------------------------------------------------------------------------ the app through Ray's proxy
def test_openai_client_streams_through_the_proxy_chunk_by_chunk(echo_app, openai_client):
    client = openai_client(echo_app, api_key="secret", timeout=300)
    chunks = [
        c.choices[0].delta.content
        for c in client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "one two three four"}], stream=True
        )
        if c.choices and c.choices[0].delta.content
    ]
    assert chunks == ["one ", "two ", "three ", "four "]  # one SSE event per word: the proxy does not buffer the stream
    events = [e.type for e in client.responses.create(model="echo", input="hi there", stream=True)]
    assert (
        events[0] == "response.created"
        and events[-1] == "response.completed"
        and "response.output_text.delta" in events
    )
    assert (
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
        .choices[0]
        .message.content
        == "hi"
    )
    assert [m.id for m in client.models.list()] == ["echo"]


def test_two_replicas_both_answer(echo_app):
    seen = set()
    with httpx.Client(timeout=120, headers={"Authorization": "Bearer secret"}) as http:
        for _ in range(60):
            resp = http.post(f"{echo_app}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
            assert resp.status_code == 200
            seen.add(resp.headers[REPLICA_HEADER])
            if len(seen) == 2:
                break
    assert len(seen) == 2, seen


def test_auth_errors_health_and_metrics_are_the_apps(echo_app):
    key = {"Authorization": "Bearer secret"}
    body = {"messages": [{"role": "user", "content": "hi"}]}
    refused = httpx.post(f"{echo_app}/v1/chat/completions", json=body, timeout=120)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    unknown = httpx.post(f"{echo_app}/v1/chat/completions", json={**body, "model": "other"}, headers=key, timeout=120)
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "model"
    bad = httpx.post(f"{echo_app}/v1/chat/completions", json={"messages": "nope"}, headers=key, timeout=120)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages"
    assert (
        httpx.post(f"{echo_app}/invocations", json=body, headers=key, timeout=120).json()["messages"][0]["content"]
        == "hi"
    )
    assert httpx.get(f"{echo_app}/health", timeout=120).json() == {"status": "ok"}
    assert (
        'servelm_requests_total{route="/v1/chat/completions"' in httpx.get(f"{echo_app}/metrics", timeout=120).text
    )  # the answering replica's


def test_llm_streams_with_usage_through_the_proxy(tiny_app, openai_client):
    client = openai_client(tiny_app, timeout=300)
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    assert chunks[-1].usage.completion_tokens == 12
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1


def test_a_disconnect_mid_stream_frees_the_engine_row(tiny_app):
    """Ray's proxy cancels the replica's request when the client goes away; the stream's generator closes and
    the engine aborts the sequence: its steps stop long before max_tokens, and the slot is free."""
    steps_before = metric(tiny_app, "servelm_batch_size_count")
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1500, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{tiny_app}/v1/chat/completions", json=body, timeout=300) as resp:
        assert resp.status_code == 200
        events = 0
        for line in resp.iter_lines():
            events += line.startswith("data:")
            if events == 3:
                break  # leaving the block closes the connection mid-stream
    deadline = time.monotonic() + 120
    steps = metric(tiny_app, "servelm_batch_size_count")
    while time.monotonic() < deadline:  # the engine stops stepping: nothing is left in its batch
        time.sleep(0.5)
        later = metric(tiny_app, "servelm_batch_size_count")
        if later == steps:
            break
        steps = later
    time.sleep(0.5)
    assert metric(tiny_app, "servelm_batch_size_count") == steps, "the engine kept stepping after the client left"
    assert steps - steps_before < 1500, "the sequence ran to max_tokens: it was not aborted"
    assert metric(tiny_app, "servelm_num_requests_running") == 0
    answer = httpx.post(
        f"{tiny_app}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "ignore_eos": True},
        timeout=300,
    ).json()
    assert answer["usage"]["completion_tokens"] == 4


# ------------------------------------------------------------------------------------ readiness, options, autoscaling
def test_a_replica_is_ready_only_once_its_model_loaded(ray_base, echo_dir, tmp_path):
    """A model that fails to load fails its replicas (with the reason), instead of serving 503s."""
    broken = tmp_path / "broken"
    shutil.copytree(echo_dir, broken)
    (broken / "echo_agent.py").unlink()
    with pytest.raises(RuntimeError, match="broken failed"):
        serve.run(build_app(str(broken), ray_actor_options=CPUS), name="broken", route_prefix="/broken")
    try:
        message = serve.status().applications["broken"].deployments["servelm"].message
        assert "failed to load" in message and "echo_agent.py is missing" in message, message
    finally:
        serve.delete("broken")


def test_options_become_deployment_options(echo_dir, tiny_llama_dir):
    server, engine = ServerOptions(max_concurrency=24, max_queue=7, graceful_timeout=5), EngineOptions(max_num_seqs=16)
    fixed = deployment_options(server, engine, "pyfunc", num_replicas=3)
    assert fixed == {
        "max_ongoing_requests": 24,
        "max_queued_requests": 7,
        "graceful_shutdown_timeout_s": 5.0,
        "num_replicas": 3,
    }
    auto = deployment_options(
        server, engine, "transformers", num_replicas="auto", autoscaling_config={"max_replicas": 4}
    )
    assert auto["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 16,
    }  # the LLM's batch
    assert (
        deployment_options(server, engine, "pyfunc", autoscaling_config={})["autoscaling_config"][
            "target_ongoing_requests"
        ]
        == 24
    )
    assert deployment_options(server, EngineOptions(device="cuda", tensor_parallel_size=2))["ray_actor_options"] == {
        "num_gpus": 2
    }
    with pytest.raises(TypeError, match="port"):
        build_app(echo_dir, port=9000)
    with pytest.raises(ValueError, match="max_concurrency"):
        build_app(echo_dir, max_concurrency=0)
    # `serve run servelm.serving.ray:app model=DIR key=value ...` hands the builder strings; the typed args convert them
    args = ServelmAppArgs.model_validate(
        {
            "model": tiny_llama_dir,
            "max_concurrency": "12",
            "max_num_seqs": "4",
            "num_replicas": "auto",
            "autoscaling_config": '{"max_replicas": 2}',
            "ray_actor_options": '{"num_cpus": 0.5}',
        }
    )
    deployment = app_builder(args)._bound_deployment
    assert deployment.max_ongoing_requests == 12 and deployment.ray_actor_options["num_cpus"] == 0.5
    assert deployment._deployment_config.autoscaling_config.target_ongoing_requests == 4
    assert deployment.init_args[0] == tiny_llama_dir and deployment.init_args[2]["max_num_seqs"] == 4
    with pytest.raises(Exception, match="not_an_option"):
        ServelmAppArgs.model_validate({"model": tiny_llama_dir, "not_an_option": 1})


SLOW_AGENT = """
import time
from servelm.agents import ChatAgent, ChatAgentChunk, ChatAgentMessage, ChatAgentResponse
from servelm.flavors import set_model


class Slow(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content="ok", id="m")])

    def predict_stream(self, messages, context=None, custom_inputs=None):
        for _ in range(10):
            time.sleep(0.3)
            yield ChatAgentChunk(delta=ChatAgentMessage(role="assistant", content="x", id="m"))


set_model(Slow())
"""


def test_autoscales_on_ongoing_requests(ray_base, tmp_path, write_code):
    """Target: the replica's concurrency (max_concurrency=2). Four streams at once are twice that: a second replica
    starts."""
    path = str(tmp_path / "slow")
    save_model(path, python_model=write_code(tmp_path, "slow.py", SLOW_AGENT))
    serve.run(
        build_app(
            path,
            max_concurrency=2,
            ray_actor_options=CPUS,
            autoscaling_config={
                "min_replicas": 1,
                "max_replicas": 2,
                "upscale_delay_s": 0,
                "look_back_period_s": 1,
                "metrics_interval_s": 0.5,
                "downscale_delay_s": 600,
            },
        ),
        name="slow",
        route_prefix="/slow",
    )

    def running() -> int:
        states = serve.status().applications["slow"].deployments["servelm"].replica_states
        return states.get("RUNNING", 0)

    assert running() == 1
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            with httpx.stream(
                "POST",
                f"{ray_base}/slow/v1/chat/completions",
                timeout=300,
                json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
            ) as resp:
                for _ in resp.iter_lines():
                    pass

    clients = [threading.Thread(target=stream, daemon=True) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        deadline = time.monotonic() + 300
        while running() < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert running() == 2
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=120)
        serve.delete("slow")


def test_several_models_in_one_replica(ray_base, echo_dir, tiny_llama_dir):
    """A replica serves an agent and an LLM together: both names answer, /v1/models lists both."""
    models = [{"model": echo_dir, "name": "echo"}, {"model": tiny_llama_dir, "name": "tiny", "max_concurrency": 8}]
    serve.run(build_app(models, ray_actor_options=CPUS), name="pair", route_prefix="/pair")
    base = f"{ray_base}/pair"
    assert [m["id"] for m in httpx.get(f"{base}/v1/models", timeout=60).json()["data"]] == ["echo", "tiny"]
    hi = [{"role": "user", "content": "hi there"}]
    echo = httpx.post(f"{base}/v1/chat/completions", json={"model": "echo", "messages": hi}, timeout=120)
    assert echo.status_code == 200 and echo.json()["choices"][0]["message"]["content"] == "hi there"
    llm = httpx.post(
        f"{base}/v1/chat/completions", json={"model": "tiny", "messages": hi, "max_tokens": 3}, timeout=120
    )
    assert llm.status_code == 200 and llm.json()["usage"]["completion_tokens"] <= 3
    assert httpx.get(f"{base}/health", timeout=60).json()["models"] == {
        "echo": {"status": "ok"},
        "tiny": {"status": "ok"},
    }
    serve.delete("pair")
