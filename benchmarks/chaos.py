"""What one hostile (or unlucky) client can do to everyone else: each attack runs against a real
``servelm serve`` while a victim stream runs beside it and ``/health`` is probed every 100 ms.

    python benchmarks/chaos.py [--model tiny|smollm2] [--engine transformers|onnx] [--attacks a,b,...] \
        [--out FILE.json]

For each attack the table says: what the attacker got (its status), whether the victim stream finished with all
its own tokens, ``/health``'s p99 latency and failures during the attack, the server's resident memory (server
and engine processes) before and a moment after, and whether the server is still up. A row passes when the victim
completes, /health p99 < 250 ms with no failure, the attacker got a 4xx or its own error, memory is back within
10% (or 64 MiB) and the server answers. Attacks that kill the engine (``engine-kill``) expect 503s on /health
until it is back; theirs is judged on the engine coming back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any, Optional

import httpx
from json_report import emit
from measure import tree_rss

ASK = [{"role": "user", "content": "Tell me a long story about a small server."}]
EVIL_PATTERN = "^(x{1000}){1000}$"


# ------------------------------------------------------------------------------------------- the attacks
def many_completions(base: str, model: str) -> int:
    body = {"model": model, "prompt": ["hello there"] * 5000, "n": 128, "max_tokens": 4}
    return httpx.post(f"{base}/v1/completions", json=body, timeout=600).status_code


def many_instances(base: str, model: str) -> int:
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return httpx.post(f"{base}/invocations", json={"instances": [chat] * 100_000}, timeout=600).status_code


def sampling_extremes(base: str, model: str) -> str:
    statuses = []
    for extra in ({"temperature": 1e-45}, {"top_k": 10**19}, {"seed": 2**70}):
        body = {"model": model, "messages": ASK, "max_tokens": 8, **extra}
        statuses.append(httpx.post(f"{base}/v1/chat/completions", json=body, timeout=600).status_code)
    for prompt in ([1, 2, 10**9], [1, 2, -5]):
        body = {"model": model, "prompt": prompt, "max_tokens": 4}
        statuses.append(httpx.post(f"{base}/v1/completions", json=body, timeout=600).status_code)
    return "/".join(map(str, statuses))


def evil_schemas(base: str, model: str, plain: bool = False) -> str:
    """16 requests at once, each with its own schema whose pattern would build hundreds of MB of lexer (with
    ``plain``, the same 16 requests without a schema: the baseline for the victim's largest gap)."""

    async def one(client: httpx.AsyncClient, i: int) -> int:
        schema = {"type": "object", "properties": {f"k{i}": {"type": "string", "pattern": EVIL_PATTERN}}}
        body: dict[str, Any] = {"model": model, "messages": ASK, "max_tokens": 16}
        if not plain:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": f"s{i}", "schema": schema}}
        return (await client.post(f"{base}/v1/chat/completions", json=body, timeout=600)).status_code

    async def all_of_them() -> list[int]:
        async with httpx.AsyncClient() as client:
            return await asyncio.gather(*(one(client, i) for i in range(16)))

    return "/".join(sorted({str(s) for s in asyncio.run(all_of_them())}))


def huge_message(base: str, model: str) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "word " * 2_000_000}], "max_tokens": 4}
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=600).status_code


def deep_json(base: str, model: str) -> str:
    deep = "[" * 100_000 + "]" * 100_000
    headers = {"content-type": "application/json"}
    statuses = [
        httpx.post(f"{base}{path}", content=deep, headers=headers, timeout=600).status_code
        for path in ("/v1/chat/completions", "/invocations")
    ]
    statuses.append(httpx.post(f"{base}/invocations", json={"inputs": {"b64": "abc"}}, timeout=600).status_code)
    return "/".join(map(str, statuses))


def image_part(base: str, model: str) -> int:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    body = {"model": model, "messages": [{"role": "user", "content": [{"type": "text", "text": "see"}, image]}]}
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=600).status_code


def big_responses(base: str, model: str) -> str:
    statuses = set()
    for _ in range(20):
        body = {"model": model, "input": "x " * 4_000_000, "max_output_tokens": 2}
        statuses.add(httpx.post(f"{base}/v1/responses", json=body, timeout=600).status_code)
    return "/".join(map(str, sorted(statuses)))


def non_readers(base: str, model: str) -> str:
    """50 streams whose clients read nothing, left open for a while, then closed."""
    port = int(base.rsplit(":", 1)[1])
    payload = json.dumps({"model": model, "messages": ASK, "max_tokens": 200, "stream": True}).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    socks = []
    for _ in range(50):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(request)
        socks.append(sock)
    time.sleep(5)
    for sock in socks:
        sock.close()
    return "held 5 s"


def slowloris(base: str, model: str) -> str:
    """1000 connections that send half a request line and then nothing."""
    port = int(base.rsplit(":", 1)[1])
    socks, answered = [], 0
    for _ in range(1000):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            socks.append(sock)
        except OSError:
            break
    deadline = time.monotonic() + 120
    for sock in socks:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            answered += sock.recv(64).startswith(b"HTTP/1.1 408")
        except OSError:
            pass
        sock.close()
    return f"{answered}/{len(socks)} got 408"


def agent_error(base: str, model: str) -> str:
    """An agent that raises with a secret in its message: a 500 that names the failure, not the secret."""
    body = {"model": model, "messages": [{"role": "user", "content": "secret"}]}
    resp = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=600)
    return f"{resp.status_code}, {'secret LEAKED' if SECRET in resp.text else 'no secret in body'}"


def engine_kill(base: str, model: str, server_pid: int) -> str:
    engine = next((pid for pid in _children(server_pid) if "spawn_main" in _cmdline(pid)), None)  # the engine process
    if engine is None:
        return "no engine process"
    os.kill(engine, signal.SIGKILL)
    start = time.monotonic()
    while time.monotonic() - start < 300:
        time.sleep(0.2)
        try:
            if httpx.get(f"{base}/health", timeout=10).status_code == 200:
                return f"back in {time.monotonic() - start:.1f} s"
        except httpx.HTTPError:
            pass
    return "not back in 300 s"


SECRET = "/srv/keys/prod-api-key"
AGENT = f"""
import time
from servelm.agents import ChatAgent, ChatAgentChunk, ChatAgentMessage, ChatAgentResponse
from servelm.flavors import set_model

class Victim(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        if messages[-1].content == "secret":
            raise RuntimeError("cannot open {SECRET}")
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content="ok")])

    def predict_stream(self, messages, context=None, custom_inputs=None):
        for i in range(int(messages[-1].content)):  # a word every 10 ms
            time.sleep(0.01)
            yield ChatAgentChunk(delta=ChatAgentMessage(role="assistant", content="w ", id="m"))

set_model(Victim())
"""

ATTACKS: dict[str, Callable[..., Any]] = {
    "many-completions": many_completions,
    "many-instances": many_instances,
    "sampling-extremes": sampling_extremes,
    "burst-of-16": lambda base, model: evil_schemas(base, model, plain=True),
    "evil-schemas": evil_schemas,
    "huge-message": huge_message,
    "deep-json-bad-base64": deep_json,
    "image-part": image_part,
    "big-responses": big_responses,
    "non-readers": non_readers,
    "slowloris": slowloris,
    "engine-kill": engine_kill,
    "agent-error": agent_error,
}
#: what a python agent is attacked with (the rest are LLM engines' attacks)
AGENT_ATTACKS = ("agent-error", "deep-json-bad-base64", "non-readers", "slowloris")


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(c) for c in f.read().split()]
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------- around each attack
class Probe:
    """GET /health every 100 ms on a thread: latencies (ms) and failures (non-200 or transport errors)."""

    def __init__(self, base: str):
        self.base, self.failures = base, 0
        self.latencies: list[float] = []  # ms
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._done.wait(0.1):
                start = time.perf_counter()
                try:
                    ok = client.get(f"{self.base}/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.latencies.append((time.perf_counter() - start) * 1000)
                self.failures += not ok

    def stop(self) -> dict[str, Any]:
        self._done.set()
        self._thread.join()
        ordered = sorted(self.latencies) or [0.0]
        return {"health_p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 1), "health_failures": self.failures}


class Victim:
    """One streamed chat request of ``tokens`` tokens (ignore_eos) beside the attack: did it get them all?"""

    def __init__(self, base: str, model: str, tokens: int, agent: bool = False):
        self.result: dict[str, Any] = {}
        self.agent = agent
        if agent:  # the agent streams as many words as the message says, then stops
            body = {"model": model, "messages": [{"role": "user", "content": str(tokens)}], "stream": True}
        else:
            body = {"model": model, "messages": ASK, "max_tokens": tokens, "ignore_eos": True, "stream": True}
            body["stream_options"] = {"include_usage": True}
        self._thread = threading.Thread(target=self._run, args=(base, body, tokens), daemon=True)
        self._thread.start()

    def _run(self, base: str, body: dict[str, Any], tokens: int) -> None:
        usage, finish, error, gaps, last, words = None, None, None, [], time.perf_counter(), 0
        try:
            with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=600) as resp:
                for line in resp.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    now = time.perf_counter()
                    gaps.append(now - last)
                    last = now
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        error = chunk["error"]["message"]
                    for choice in chunk.get("choices") or []:
                        finish = choice.get("finish_reason") or finish
                        words += (choice.get("delta") or {}).get("content", "").count("w ")
                    usage = chunk.get("usage") or usage
        except httpx.HTTPError as exc:
            error = repr(exc)
        got = words if self.agent else (usage or {}).get("completion_tokens", 0)
        self.result = {
            "victim_ok": error is None and finish == ("stop" if self.agent else "length") and got == tokens,
            "victim_tokens": got,
            "victim_error": error,
            "victim_largest_gap_ms": round(max(gaps[1:], default=0) * 1000, 1),
        }

    def wait(self) -> dict[str, Any]:
        self._thread.join(timeout=900)
        return self.result or {"victim_ok": False, "victim_error": "did not finish"}


def run_attack(name: str, base: str, model: str, server_pid: int, tokens: int, agent: bool) -> dict[str, Any]:
    before = tree_rss(server_pid)
    probe, victim = Probe(base), Victim(base, model, tokens, agent)
    time.sleep(0.5)  # the victim is streaming
    attack = ATTACKS[name]
    started = time.perf_counter()
    try:
        got = attack(base, model, server_pid) if name == "engine-kill" else attack(base, model)
    except Exception as exc:  # the attacker's own failure is a result, not the benchmark's
        got = f"{type(exc).__name__}: {exc}"[:120]
    took = time.perf_counter() - started
    row: dict[str, Any] = {"attack": name, "attacker_got": got, "attack_s": round(took, 1)}
    row.update(victim.wait())
    row.update(probe.stop())
    time.sleep(3)  # what the attack allocated for itself is let go
    after = tree_rss(server_pid)
    try:
        alive = httpx.get(f"{base}/health", timeout=30).status_code == 200
    except httpx.HTTPError:
        alive = False
    row.update(
        {
            "rss_before_mb": round(before / 2**20),
            "rss_after_mb": round(after / 2**20),
            "server_up": alive,
        }
    )
    memory_ok = after <= before * 1.10 or after - before <= 64 * 2**20
    attacker_ok = (400 <= got < 500) if isinstance(got, int) else "LEAKED" not in str(got)
    if name == "engine-kill":  # the victim's stream ends with the engine's death; /health is 503 meanwhile
        row["pass"] = alive and str(got).startswith("back in")
    else:
        row["pass"] = bool(
            row["victim_ok"]
            and row["health_p99_ms"] < 250
            and row["health_failures"] == 0
            and attacker_ok
            and memory_ok
            and alive
        )
    return row


def table(rows: list[dict[str, Any]]) -> str:
    head = "| attack | attacker got | victim | /health p99 (fail) | RSS before -> after | up | pass |"
    lines = [head, "|" + " --- |" * 7]
    for r in rows:
        victim = "ok" if r.get("victim_ok") else f"**{r.get('victim_error') or r.get('victim_tokens')}**"
        lines.append(
            f"| {r['attack']} | {r['attacker_got']} | {victim} (gap {r.get('victim_largest_gap_ms')} ms) | "
            f"{r['health_p99_ms']} ms ({r['health_failures']}) | {r['rss_before_mb']} -> {r['rss_after_mb']} MiB | "
            f"{'yes' if r['server_up'] else '**no**'} | {'yes' if r['pass'] else '**no**'} |"
        )
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", choices=("tiny", "smollm2", "agent"))
    parser.add_argument("--engine", default="transformers", choices=("transformers", "onnx"))
    parser.add_argument("--attacks", default=None, help="comma-separated, in order (default: all that apply)")
    parser.add_argument("--victim-tokens", type=int, default=300)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    from servelm.flavors.transformers import save_model, smollm2, tiny_model
    from servelm.serving.demo import free_port, wait_healthy

    work = tempfile.mkdtemp(prefix="servelm-chaos-")
    directory = os.path.join(work, "model")
    agent = args.model == "agent"
    llm_attacks = [name for name in ATTACKS if name != "agent-error"]
    attacks = args.attacks.split(",") if args.attacks else list(AGENT_ATTACKS) if agent else llm_attacks
    if agent:
        from servelm.flavors.pyfunc import save_model as save_pyfunc

        code = os.path.join(work, "agent.py")
        with open(code, "w") as f:
            f.write(AGENT)
        save_pyfunc(directory, python_model=code)
    elif args.engine == "onnx":
        source = smollm2() if args.model == "smollm2" else tiny_model("llama")
        from servelm.flavors.onnx import export
        from servelm.flavors.onnx import save_model as save_onnx

        save_onnx(export(source, os.path.join(work, "genai")), directory)
    else:
        save_model(smollm2() if args.model == "smollm2" else tiny_model("llama"), directory)
    port = free_port()
    argv_serve = ["serve", "-m", directory, "--port", str(port), "--served-model-name", "m"]
    server = subprocess.Popen(
        [sys.executable, "-m", "servelm.serving.cli", *argv_serve],
        stderr=open(os.path.join(work, "server.log"), "w"),
    )
    base = f"http://127.0.0.1:{port}"
    rows = []
    try:
        wait_healthy(base, 600)
        for name in attacks:
            row = run_attack(name, base, "m", server.pid, args.victim_tokens, agent)
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
            if not row["server_up"]:
                break
    finally:
        server.terminate()
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
    report = {
        "model": args.model,
        "engine": "pyfunc" if agent else args.engine,
        "rows": rows,
        "passed": sum(r["pass"] for r in rows),
        "table": table(rows),
        "median_health_p99_ms": statistics.median(r["health_p99_ms"] for r in rows) if rows else None,
    }
    emit(report, args.out)
    print(report["table"], file=sys.stderr)
    return report


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
