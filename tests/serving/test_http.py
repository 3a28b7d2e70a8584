"""HTTP plumbing on a real server: the API key, JSON bodies and their limit, the timeout and client
disconnects (a non-streamed request cancelled, a stream's generator closed, its slot freed)."""

import asyncio
import json
import socket
import threading

import httpx
import pytest

from servelm.agents import ChatAgent, ChatAgentMessage, ChatAgentResponse


def test_auth(limited_server, post_chat, chat_body, assert_error):
    base, _, _ = limited_server
    assert_error(post_chat(base, chat_body, headers={}), 401)
    assert_error(post_chat(base, chat_body, headers={"Authorization": "Bearer wrong"}), 401)
    assert_error(httpx.post(f"{base}/invocations", json=chat_body), 401)
    assert httpx.get(f"{base}/health").status_code == 200  # health needs no key
    assert post_chat(base, chat_body).status_code == 200


def test_bad_inputs_name_the_field(limited_server, post_chat, auth, assert_error):
    base, _, _ = limited_server
    assert_error(
        post_chat(base, content=b"{not json", headers={**auth, "content-type": "application/json"}),
        400,
        "not valid JSON",
    )
    assert_error(post_chat(base, {"messages": []}), 400, "messages")
    assert_error(post_chat(base, {"messages": [{"role": "wizard", "content": "x"}]}), 400, "messages.0.role")
    assert_error(
        post_chat(base, {"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}), 400, "temperature"
    )
    assert_error(post_chat(base, {}), 400, "messages: Field required")
    assert post_chat(base, {"messages": [{"role": "user"}]}).json()["error"]["param"] == "messages.0"


def test_payload_too_large(limited_server, post_chat, assert_error):
    base, _, _ = limited_server
    assert_error(post_chat(base, {"messages": [{"role": "user", "content": "x" * 20_000}]}), 413)


def test_timeout_is_504(limited_server, post_chat, assert_error):
    """The agent blocks until the test lets it go: only the server's 2 s timeout can end the request."""
    base, app, agent = limited_server
    assert_error(post_chat(base, {"messages": [{"role": "user", "content": "block"}]}), 504)
    assert agent.blocked.is_set() and not agent.unblocked.is_set()  # the agent was still working when the 504 went out
    assert app.state.servelm.admission.running == 0
    agent.release.set()  # let the abandoned worker thread finish
    assert agent.unblocked.wait(120)


def test_disconnect_closes_generator_and_frees_slot(limited_server, post_chat, chat_body, auth, wait_until):
    base, app, agent = limited_server
    before = agent.closed
    body = {"messages": [{"role": "user", "content": "long"}], "stream": True}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, headers=auth, timeout=120) as resp:
        lines = resp.iter_lines()
        next(lines)
        next(lines)
    wait_until(lambda: agent.closed != before and not app.state.servelm.admission.running)
    assert agent.closed == before + 1
    assert app.state.servelm.admission.running == 0
    assert post_chat(base, chat_body).status_code == 200


class AsyncSlow(ChatAgent):
    """Awaits for 10 s (cancellable), saying when it started and counting its cancellations."""

    def __init__(self):
        self.cancelled = 0
        self.started = threading.Event()

    async def apredict(self, messages, context=None, custom_inputs=None):
        self.started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content="late")])


def test_disconnect_cancels_non_streamed_async_work(serve, chat_body, wait_until):
    agent = AsyncSlow()
    with serve(agent) as (base, app):
        host, port = base.removeprefix("http://").split(":")
        payload = json.dumps(chat_body).encode()
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        with socket.create_connection((host, int(port))) as client:
            client.sendall(head.encode() + payload)
            assert agent.started.wait(120)  # the request is in the agent's hands: now the client goes away
        wait_until(lambda: agent.cancelled and not app.state.servelm.admission.running, timeout=60)
        assert agent.cancelled == 1 and app.state.servelm.admission.running == 0
        text = httpx.get(f"{base}/metrics").text
        assert 'status="499"' in text


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/invocations"])
def test_deeply_nested_json_is_400(limited_server, path):
    base, _, _ = limited_server
    deep = "[" * 4000 + "]" * 4000
    for body in (deep, '{"inputs": ' + deep + "}"):
        resp = httpx.post(
            f"{base}{path}",
            content=body,
            headers={"content-type": "application/json", "Authorization": "Bearer sekret"},
            timeout=120,
        )
        assert resp.status_code == 400 and resp.json()["error"]["code"] in ("invalid_json", "invalid_value"), resp.text


def test_invalid_base64_is_400(limited_server):
    base, _, _ = limited_server
    resp = httpx.post(
        f"{base}/invocations", json={"inputs": {"b64": "abc"}}, headers={"Authorization": "Bearer sekret"}, timeout=120
    )
    assert resp.status_code == 400 and "base64" in resp.json()["error"]["message"], resp.text
