"""A server with every limit set (API key, one running request, no queue, a small body limit, a 2 s
timeout) in front of an agent that fails, blocks and streams on request: what the error, limit and
disconnect tests of tests/serving/ share."""

import threading
import time

import httpx
import pytest

from servelm.agents import ChatAgent, ChatAgentChunk, ChatAgentMessage, ChatAgentResponse


class Slow(ChatAgent):
    """Echoes the last message, except: ``boom`` raises; ``block`` waits inside predict until the test
    sets ``release`` (``blocked`` / ``unblocked`` say where it is); streams 1000 words, a slow 20 ms
    apart (``fail-first`` raises before the first, ``fail-mid`` after two), and counts the streams closed."""

    def __init__(self):
        self.closed = 0
        self.blocked = threading.Event()
        self.release = threading.Event()
        self.unblocked = threading.Event()

    def predict(self, messages, context=None, custom_inputs=None):
        text = messages[-1].content
        if text == "boom":
            raise RuntimeError("agent exploded")
        if text == "block":
            self.blocked.set()
            self.release.wait(60)
            self.unblocked.set()
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content=text)])

    def predict_stream(self, messages, context=None, custom_inputs=None):
        try:
            for i in range(1000):
                if messages[-1].content == "fail-first" and i == 0:
                    raise ValueError("broke before the first word")
                if messages[-1].content == "fail-mid" and i == 2:
                    raise ValueError("broke mid-stream")
                time.sleep(0.02)
                yield ChatAgentChunk(delta=ChatAgentMessage(role="assistant", content=f"w{i} ", id="m"))
        finally:
            self.closed += 1


API_KEY = "sekret"


@pytest.fixture(scope="module")
def limited_server(serve):
    """(base_url, app, agent): the ``Slow`` agent behind every limit (one server per test module)."""
    agent = Slow()
    with serve(agent, api_key=API_KEY, max_concurrency=1, max_queue=0, max_body_bytes=10_000, timeout=2) as (base, app):
        try:
            yield base, app, agent
        finally:
            agent.release.set()  # no worker thread left blocked in predict


@pytest.fixture(scope="session")
def auth():
    """The headers the limited server wants."""
    return {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="session")
def chat_body():
    """The smallest chat request body."""
    return {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="session")
def post_chat(auth):
    """``post_chat(base, body=None, **httpx_kwargs)``: POST /v1/chat/completions with the key unless headers are
    given."""

    def post(base, body=None, **kw):
        kw.setdefault("headers", auth)
        return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120, **kw)

    return post


@pytest.fixture(scope="session")
def assert_error():
    """``assert_error(response, status, field_in_message=None)``: an OpenAI error body with that status."""

    def check(resp, status, field_in_message=None):
        assert resp.status_code == status, resp.text
        error = resp.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        if field_in_message:
            assert field_in_message in error["message"], error

    return check
