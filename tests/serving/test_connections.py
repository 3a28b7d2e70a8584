"""Slow clients cannot hold the server (a real ``servelm serve``): a request not sent whole within
``--request-read-timeout`` gets a 408 and its connection is closed (a silent connection, slowloris headers, a
body that never ends); connections past ``--max-connections`` get a 503; a stream whose client stops reading
is dropped after ``--stream-stall-timeout`` and its slot freed."""

import socket
import subprocess
import sys
import time

import httpx
import pytest

from servelm.flavors.pyfunc import save_model

FIREHOSE_AGENT = """
from servelm.agents import ChatAgent, ChatAgentChunk, ChatAgentMessage, ChatAgentResponse
from servelm.flavors import set_model

class Firehose(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content="ok")])

    def predict_stream(self, messages, context=None, custom_inputs=None):
        while True:  # 64 KB pieces for as long as the client reads
            yield ChatAgentChunk(delta=ChatAgentMessage(role="assistant", content="x" * 65536, id="m"))

set_model(Firehose())
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A firehose agent served with 1-second read and stall timeouts and at most 8 connections."""
    from servelm.serving.demo import free_port, wait_healthy

    tmp = tmp_path_factory.mktemp("connections")
    (tmp / "agent.py").write_text(FIREHOSE_AGENT)
    save_model(str(tmp / "firehose"), python_model=str(tmp / "agent.py"))
    port = free_port()
    argv = ["serve", "-m", str(tmp / "firehose"), "--port", str(port), "--request-read-timeout", "1"]
    argv += ["--stream-stall-timeout", "1", "--max-connections", "8"]
    proc = subprocess.Popen([sys.executable, "-m", "servelm.serving.cli", *argv], stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, 600)
        yield base, port
    finally:
        proc.terminate()
        proc.wait(timeout=300)


def answer_of(sock):
    """Everything the server sends until it closes the connection."""
    sock.settimeout(300)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        b"POST /invocations HTTP/1.1\r\nHost: x\r\n"
        b'content-type: application/json\r\ncontent-length: 1000\r\n\r\n{"inputs": ',
    ],
    ids=["silent", "slowloris headers", "unfinished body"],
)
def test_a_request_not_sent_in_time_is_408_and_closed(server, sent):
    base, port = server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(sent)
        answer = answer_of(sock)  # returns once the server closes the connection
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert httpx.get(f"{base}/health", timeout=120).status_code == 200


def test_connections_past_the_cap_get_503(server):
    base, port = server
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
    try:
        deadline = time.monotonic() + 300
        refused = httpx.get(f"{base}/health", timeout=120)
        while refused.status_code != 503 and time.monotonic() < deadline:  # until the server has accepted them all
            time.sleep(0.1)
            refused = httpx.get(f"{base}/health", timeout=120)
        assert refused.status_code == 503
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 300
    while httpx.get(f"{base}/health", timeout=120).status_code != 200:  # the held ones are gone
        assert time.monotonic() < deadline
        time.sleep(0.1)


def running(base):
    for line in httpx.get(f"{base}/metrics", timeout=120).text.splitlines():
        if line.startswith("servelm_num_requests_running "):
            return float(line.split()[-1])
    return None


def test_a_stream_whose_client_stops_reading_is_dropped(server, wait_until):
    base, port = server
    body = b'{"messages": [{"role": "user", "content": "go"}], "stream": true}'
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads nothing fills up fast
        sock.connect(("127.0.0.1", port))
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        assert wait_until(lambda: running(base) == 1.0, timeout=300)  # the stream runs; its client reads nothing
        assert wait_until(lambda: running(base) == 0.0, timeout=300)  # dropped after the stall timeout
