"""Side by side: servelm's engines, vLLM and MLflow serving the same tiny model under the same load.

    python benchmarks/compare.py [--systems all] [--concurrency 1,8,32,64] [--requests 256] \
        [--max-tokens 32] [--workers 1] [--vllm-python PY] [--mlflow-python PY] [--out-dir benchmarks/results]

Builds the models itself (a tiny random Llama: hidden 64, 2 layers, head_dim 32; a trivial echo ChatAgent),
then starts each system on loopback, one after another in this one run, drives it with the load generator
of benchmarks/serve.py (aiohttp; vLLM's `bench serve` metrics), stops it, and writes JSON, a markdown
table with the target ratios, and PNG plots (when matplotlib is installed) under --out-dir.

Systems (those whose software is missing are skipped and listed as such):
  servelm-transformers, servelm-onnx, servelm-vllm  servelm serve with each engine (streamed, ignore_eos)
  vllm                  vLLM's own OpenAI server (python -m vllm.entrypoints.openai.api_server)
  mlflow-transformers   mlflow models serve of the same model saved by mlflow.transformers (no streaming)
  servelm-agent, mlflow-agent   the trivial ChatAgent, non-streamed, at the highest concurrency (request overhead)
vLLM and MLflow may live in their own venvs: --vllm-python / --mlflow-python (or SERVELM_VLLM_PYTHON /
SERVELM_MLFLOW_PYTHON) name their interpreters. Every system gets the same thread settings
(OMP_NUM_THREADS=1 for the MLflow and servelm CPU engines; vLLM reserves its own cores).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import httpx

logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health poll otherwise

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve import PROMPT  # noqa: E402

PYTHON = os.path.abspath(sys.executable)  # children run in other directories: never a relative interpreter path
LLM_SYSTEMS = ("servelm-transformers", "servelm-onnx", "servelm-vllm", "vllm", "mlflow-transformers")
AGENT_SYSTEMS = ("servelm-agent", "mlflow-agent")
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "VLLM_HOST_IP": "127.0.0.1"}

SERVELM_AGENT = '''
from servelm.agents import ChatAgent, ChatAgentMessage, ChatAgentResponse
from servelm.flavors import set_model


class Echo(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content=messages[-1].content, id="msg-1")])


set_model(Echo())
'''
MLFLOW_AGENT = '''
import mlflow
from mlflow.pyfunc import ChatAgent
from mlflow.types.agent import ChatAgentMessage, ChatAgentResponse


class Echo(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content=messages[-1].content, id="msg-1")])


mlflow.models.set_model(Echo())
'''
MLFLOW_SAVE = '''
import sys, mlflow
from transformers import AutoModelForCausalLM, AutoTokenizer
source, agent_code, out_llm, out_agent = sys.argv[1:5]
mlflow.pyfunc.save_model(out_agent, python_model=agent_code, pip_requirements=["mlflow"])
model, tokenizer = AutoModelForCausalLM.from_pretrained(source), AutoTokenizer.from_pretrained(source)
mlflow.transformers.save_model({"model": model, "tokenizer": tokenizer}, out_llm, task="llm/v1/chat", pip_requirements=["torch", "transformers"])
'''


@dataclass
class System:
    """How to start one system and what to send it."""

    name: str
    kind: str  # "llm" or "agent"
    argv: list[str]
    path: str  # route the load goes to
    body: dict[str, Any]
    stream: bool
    env: dict[str, str] = field(default_factory=dict)
    health: str = "/health"
    startup_timeout: float = 120.0  # seconds


def python_with(module: str, given: Optional[str] = None, env_var: Optional[str] = None) -> Optional[str]:
    """An interpreter that can import ``module``: the one given, $env_var, or this one; None if none can."""
    for candidate in (given, os.environ.get(env_var) if env_var else None, PYTHON):
        if candidate and subprocess.run([candidate, "-c", f"import {module}"], capture_output=True).returncode == 0:
            return candidate
    return None


def version_of(python: Optional[str], module: str) -> Optional[str]:
    if python is None:
        return None
    out = subprocess.run([python, "-c", f"import {module}; print({module}.__version__)"], capture_output=True, text=True)
    return out.stdout.strip() or None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------- models
def prepare_models(work: str, systems: list[str], mlflow_python: Optional[str]) -> dict[str, str]:
    """Model directories for the chosen systems, built in ``work``."""
    from servelm.flavors.transformers import save_model as save_transformers
    from servelm.flavors.transformers import tiny_model

    models: dict[str, str] = {"hf": tiny_model("llama")}
    models["transformers"] = os.path.join(work, "tiny-transformers")
    save_transformers(models["hf"], models["transformers"])
    if "servelm-onnx" in systems:
        from servelm.flavors.onnx import export
        from servelm.flavors.onnx import save_model as save_onnx

        models["onnx"] = os.path.join(work, "tiny-onnx")
        save_onnx(export(models["hf"], os.path.join(work, "tiny-genai")), models["onnx"])
    if "servelm-agent" in systems:
        from servelm.flavors.pyfunc import save_model as save_pyfunc

        code = os.path.join(work, "servelm_agent.py")
        with open(code, "w") as f:
            f.write(SERVELM_AGENT)
        models["servelm-agent"] = os.path.join(work, "servelm-agent")
        save_pyfunc(models["servelm-agent"], python_model=code)
    if mlflow_python and ({"mlflow-agent", "mlflow-transformers"} & set(systems)):
        code = os.path.join(work, "mlflow_agent.py")
        with open(code, "w") as f:
            f.write(MLFLOW_AGENT)
        models["mlflow-transformers"], models["mlflow-agent"] = os.path.join(work, "mlflow-transformers"), os.path.join(work, "mlflow-agent")
        subprocess.run([mlflow_python, "-c", MLFLOW_SAVE, models["hf"], code, models["mlflow-transformers"], models["mlflow-agent"]],
                       check=True, capture_output=True, env={**os.environ, "MLFLOW_TRACKING_URI": f"file://{work}/mlruns"})
    return models


def build_system(name: str, models: dict[str, str], args: argparse.Namespace, pythons: dict[str, Optional[str]], workers: int) -> System:
    """The command line, environment and request body of one system."""
    llm_body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": args.max_tokens, "temperature": 0.0, "ignore_eos": True,
                "stream": True, "stream_options": {"include_usage": True}}
    agent_body = {"messages": [{"role": "user", "content": "Say hello to the benchmark."}]}
    servelm = [PYTHON, "-m", "servelm.serving.cli", "serve", "--log-level", "warning", "--workers", str(workers)]
    one_thread = {"OMP_NUM_THREADS": "1"}
    label = f"{name} ({workers} workers)" if workers > 1 else name
    if name == "servelm-transformers":
        return System(label, "llm", servelm + ["-m", models["transformers"], "--served-model-name", "tiny"], "/v1/chat/completions",
                      {**llm_body, "model": "tiny"}, True, one_thread)
    if name == "servelm-onnx":
        return System(label, "llm", servelm + ["-m", models["onnx"], "--served-model-name", "tiny"], "/v1/chat/completions",
                      {**llm_body, "model": "tiny"}, True, one_thread)
    if name == "servelm-vllm":
        argv = [pythons["vllm"] or "", "-m", "servelm.serving.cli", "serve", "--log-level", "warning", "--engine", "vllm",
                "-m", models["transformers"], "--served-model-name", "tiny"]
        return System(name, "llm", argv, "/v1/chat/completions", {**llm_body, "model": "tiny"}, True, dict(VLLM_ENV), startup_timeout=300)
    if name == "vllm":
        argv = [pythons["vllm"] or "", "-m", "vllm.entrypoints.openai.api_server", "--model", models["hf"], "--served-model-name", "tiny",
                "--host", "127.0.0.1"]
        return System(name, "llm", argv, "/v1/chat/completions", {**llm_body, "model": "tiny"}, True, dict(VLLM_ENV), startup_timeout=300)
    mlflow_env = {"PATH": os.path.dirname(pythons["mlflow"] or PYTHON) + os.pathsep + os.environ.get("PATH", "")}  # it execs `uvicorn`
    if name == "mlflow-transformers":  # MLflow cannot stream, and its sampler refuses temperature 0
        argv = [pythons["mlflow"] or "", "-m", "mlflow", "models", "serve", "-m", models["mlflow-transformers"], "--env-manager", "local", "-h", "127.0.0.1"]
        return System(name, "llm", argv, "/invocations", {"messages": llm_body["messages"], "max_tokens": args.max_tokens}, False, {**one_thread, **mlflow_env}, "/ping", 180)
    if name == "servelm-agent":
        return System(label, "agent", servelm + ["-m", models["servelm-agent"]], "/v1/chat/completions", agent_body, False)
    if name == "mlflow-agent":
        argv = [pythons["mlflow"] or "", "-m", "mlflow", "models", "serve", "-m", models["mlflow-agent"], "--env-manager", "local", "-h", "127.0.0.1"]
        return System(name, "agent", argv, "/invocations", agent_body, False, mlflow_env, "/ping", 180)
    raise ValueError(f"unknown system {name!r}")


# ---------------------------------------------------------------------------------------------- running
def start(system: System, work: str) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start a system on a free port; (process, base URL, log path) once it answers its health check."""
    port = free_port()
    argv = system.argv + (["--port", str(port)] if "mlflow" not in system.argv else ["-p", str(port)])
    env = {**os.environ, **system.env}
    if "VLLM_CPU_KVCACHE_SPACE" in system.env:
        env.update(VLLM_RPC_BASE_PATH=os.path.join(work, "vllm-rpc"), VLLM_CACHE_ROOT=os.path.join(work, "vllm-cache"))
        os.makedirs(env["VLLM_RPC_BASE_PATH"], exist_ok=True)
    log_path = os.path.join(work, f"{system.name.replace(' ', '_')}.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + system.startup_timeout
    healthy = 0  # consecutive healthy answers: with several workers, each must have loaded its model
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{system.name} exited with {proc.returncode} while starting; log: {_tail(log_path)}")
        try:
            healthy = healthy + 1 if httpx.get(base + system.health, timeout=2, headers={"Connection": "close"}).status_code == 200 else 0
        except httpx.HTTPError:
            healthy = 0
        if healthy >= 20:
            return proc, base, log_path
        time.sleep(0.05 if healthy else 0.25)
    stop(proc)
    raise RuntimeError(f"{system.name} was not healthy after {system.startup_timeout:g} s; log: {_tail(log_path)}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the system's process group, SIGKILL what is left after 30 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
    time.sleep(1.0)  # let the ports and cores settle before the next system


def _tail(path: str, lines: int = 8) -> str:
    with open(path, "rb") as f:
        return " | ".join(f.read().decode(errors="replace").strip().splitlines()[-lines:])


def measure_with_wrk(system: System, base: str, clients: int, seconds: float, work: str) -> dict[str, Any]:
    """Requests/s and latency of a non-streamed route from wrk (C, one thread): at thousands of requests/s
    a Python client would be the bottleneck, not the server."""
    script = os.path.join(work, "post.lua")
    with open(script, "w") as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = ' + json.dumps(json.dumps(system.body)) + "\n")
    out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--latency", "-s", script, base + system.path],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    def latency(label: str) -> Optional[float]:
        for line in out.splitlines():
            parts = line.split()
            if parts and parts[0] == label:
                value = parts[1]
                scale = 1e-6 if value.endswith("us") else 1e-3 if value.endswith("ms") else 1.0
                return round(float(value.rstrip("ums")) * scale, 5)
        return None
    rate = next((float(line.split()[1]) for line in out.splitlines() if line.startswith("Requests/sec")), 0.0)
    total = next((int(line.split()[0]) for line in out.splitlines() if "requests in" in line), 0)
    bad = next((int(line.split()[-1]) for line in out.splitlines() if "Non-2xx" in line), 0)
    row = {"concurrency": clients, "requests": total, "failures": bad, "duration_s": seconds, "request_throughput": rate, "output_tokens": 0,
           "output_throughput": 0.0, "e2e_mean_s": None, "e2e_p50_s": latency("50%"), "e2e_p99_s": latency("99%"), "load_tool": "wrk"}
    row.update(system=system.name, kind=system.kind, stream=False, route=system.path)
    print(json.dumps(row), flush=True)
    return row


def measure(system: System, base: str, levels: list[int], requests: int, repeat: int = 1) -> list[dict[str, Any]]:
    """benchmarks/serve.py in a fresh process per level (this one holds torch and the exporters: a
    client sharing its heap would spend its time in the garbage collector). With ``repeat`` > 1 the
    levels run that many times over and each level's row is the run with the median throughput (all
    runs are kept under ``runs``)."""
    if repeat > 1:
        rounds = [measure(system, base, levels, requests) for _ in range(repeat)]
        rows = []
        for i in range(len(levels)):
            runs = sorted((r[i] for r in rounds), key=lambda r: r["output_throughput"] or r["request_throughput"])
            rows.append({**runs[len(runs) // 2], "runs": [{k: r[k] for k in ("output_throughput", "request_throughput", "ttft_p50_s") if k in r} for r in runs]})
        return rows
    rows = []
    for level in levels:
        argv = [PYTHON, os.path.join(os.path.dirname(os.path.abspath(__file__)), "serve.py"), "--url", base, "--path", system.path,
                "--concurrency", str(level), "--requests", str(max(requests, level)), "--body", json.dumps(system.body)] + (["--stream"] if system.stream else [])
        out = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
        if out.returncode != 0:
            raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row.update(system=system.name, kind=system.kind, stream=system.stream, route=system.path, load_tool="aiohttp")
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- reporting
def _at(rows: list[dict[str, Any]], system: str, level: int) -> Optional[dict[str, Any]]:
    return next((r for r in rows if r["system"] == system and r["concurrency"] == level and not r["failures"]), None)


def _first_token(row: dict[str, Any], q: str) -> Optional[float]:
    """TTFT for a streamed system; for one that cannot stream, the first token arrives with the whole reply."""
    return row.get(f"ttft_{q}_s") if row.get("stream") else row.get(f"e2e_{q}_s")


def target_lines(rows: list[dict[str, Any]], top: int) -> list[str]:
    """The ratios the issues set as targets, from this run; a missed target says so."""
    lines = []

    def ratio(a: str, b: str, need: float, what: str, ttft_check: Optional[str] = None) -> None:
        ra, rb = _at(rows, a, top), _at(rows, b, top)
        if ra is None or rb is None:
            return
        key = "output_throughput" if ra["kind"] == "llm" else "request_throughput"
        value = ra[key] / rb[key] if rb[key] else float("inf")
        verdict = "met" if value >= need else "**missed**"
        extra = ""
        if ttft_check:
            ta, tb = _first_token(ra, "p50"), _first_token(rb, "p50")
            if ta is not None and tb is not None:
                ok = ta <= tb * (1.1 if ttft_check == "within10" else 1.0)
                extra = f"; TTFT p50 {ta * 1000:.0f} ms vs {tb * 1000:.0f} ms ({'ok' if ok else '**worse**'})"
        lines.append(f"- {what}: {a} / {b} = **{value:.2f}x** at {top} clients (target >= {need:g}x: {verdict}){extra}")

    engines = [s for s in sorted({r["system"] for r in rows}) if s.startswith("servelm-") and s != "servelm-agent" and not s.startswith("servelm-agent")]
    own = [s for s in engines if not s.startswith("servelm-vllm")]  # servelm's own engines (servelm-vllm is vLLM underneath)
    best = max((s for s in own if _at(rows, s, top)), key=lambda s: _at(rows, s, top)["output_throughput"], default=None)  # type: ignore[index]
    if best:
        ratio(best, "vllm", 2.0, "best servelm engine vs vLLM", "lower")
    for engine in engines:
        if engine.startswith("servelm-transformers"):
            ratio(engine, "vllm", 1.0, "transformers engine vs vLLM", "lower")
            one, many = _at(rows, engine, 1), _at(rows, engine, top)
            if one and many:
                value = many["output_throughput"] / one["output_throughput"]
                lines.append(f"- {engine} at {top} clients vs one at a time: **{value:.1f}x** (target >= 10x: {'met' if value >= 10 else '**missed**'})")
        if engine.startswith("servelm-vllm"):
            ratio(engine, "vllm", 0.95, "servelm on vLLM vs vLLM's own server", "within10")
        ratio(engine, "mlflow-transformers", 10.0, f"{engine} vs MLflow's transformers serving")
    agent_level = max((r["concurrency"] for r in rows if r["kind"] == "agent"), default=top)
    for agent in sorted({r["system"] for r in rows if r["kind"] == "agent" and r["system"].startswith("servelm")}):
        a, b = _at(rows, agent, agent_level), _at(rows, "mlflow-agent", agent_level)
        if a and b:
            value = a["request_throughput"] / b["request_throughput"]
            p99 = f"p99 {a['e2e_p99_s'] * 1000:.0f} ms vs {b['e2e_p99_s'] * 1000:.0f} ms"
            lines.append(f"- trivial ChatAgent: {agent} / mlflow-agent = **{value:.1f}x** requests/s at {agent_level} clients "
                         f"(target >= 10x: {'met' if value >= 10 else '**missed**'}); {p99}")
    return lines


def markdown(report: dict[str, Any]) -> str:
    rows, top = report["rows"], max(report["settings"]["concurrency"])
    out = [f"# servelm vs vLLM vs MLflow ({report['date']})", "",
           f"Machine: {report['machine']}. Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v) + ".",
           f"Load: benchmarks/serve.py (aiohttp, a fresh client process per level, the same for every system), {report['settings']['requests']} requests per level, "
           f"prompt of {len(PROMPT.split())} words, max_tokens {report['settings']['max_tokens']} with ignore_eos where supported, temperature 0"
           + (f"; each level run {report['settings'].get('repeat')} times, the median kept." if report["settings"].get("repeat", 1) > 1 else "."),
           "Systems ran one after another in this one run. TTFT for MLflow (no streaming) is its whole reply's latency (marked *).",
           "The trivial agents are loaded with wrk (C, one thread) when it is installed, else with the same aiohttp client.", "",
           "## Tiny LLM (streamed chat completions)", "",
           "| system | clients | output tok/s | req/s | TTFT p50 | TTFT p99 | ITL p50 | E2E p50 | failures |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    ms = lambda v: "-" if v is None else f"{v * 1000:.1f} ms"  # noqa: E731
    for r in (r for r in rows if r["kind"] == "llm"):
        star = "" if r["stream"] else "*"
        out.append(f"| {r['system']} | {r['concurrency']} | {r['output_throughput']:.0f} | {r['request_throughput']:.1f} | {ms(_first_token(r, 'p50'))}{star} | "
                   f"{ms(_first_token(r, 'p99'))}{star} | {ms(r.get('itl_p50_s'))} | {ms(r.get('e2e_p50_s'))} | {r['failures']} |")
    agents = [r for r in rows if r["kind"] == "agent"]
    if agents:
        out += ["", "## Trivial ChatAgent (request overhead, not streamed)", "", "| system | route | clients | req/s | p50 | p99 | failures | load |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in agents:
            out.append(f"| {r['system']} | {r['route']} | {r['concurrency']} | {r['request_throughput']:.0f} | {ms(r['e2e_p50_s'])} | {ms(r['e2e_p99_s'])} | "
                       f"{r['failures']} | {r.get('load_tool', 'aiohttp')} |")
    out += ["", "## Targets", ""] + (target_lines(rows, top) or ["- (not enough systems in this run to compute the target ratios)"])
    if report["skipped"]:
        out += ["", "## Skipped", ""] + [f"- {name}: {why}" for name, why in report["skipped"].items()]
    out += ["", "Reproduce: `python benchmarks/compare.py " + " ".join(report["argv"]) + "`", ""]
    return "\n".join(out)


def plots(report: dict[str, Any], out_dir: str, stem: str) -> list[str]:
    """Throughput and TTFT vs concurrency, one line per LLM system (skipped without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    rows = [r for r in report["rows"] if r["kind"] == "llm" and not r["failures"]]
    systems = sorted({r["system"] for r in rows})
    written = []
    for metric, ylabel, fname in (("output_throughput", "output tokens/s", "throughput"), ("ttft", "time to first token (ms)", "ttft")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for system in systems:
            mine = sorted((r for r in rows if r["system"] == system), key=lambda r: r["concurrency"])
            xs = [r["concurrency"] for r in mine]
            if metric == "ttft":
                ax.plot(xs, [(_first_token(r, "p50") or 0) * 1000 for r in mine], marker="o", label=f"{system} p50")
                ax.plot(xs, [(_first_token(r, "p99") or 0) * 1000 for r in mine], marker="x", linestyle="--", label=f"{system} p99")
                ax.set_yscale("log")
            else:
                ax.plot(xs, [r[metric] for r in mine], marker="o", label=system)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.set_title(f"tiny Llama, {report['settings']['max_tokens']} tokens per request ({report['date']})")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out_dir, f"{stem}-{fname}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------- main
def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", default="all", help=f"comma-separated, or all: {', '.join(LLM_SYSTEMS + AGENT_SYSTEMS)}")
    parser.add_argument("--concurrency", default="1,8,32,64", help="client counts for the LLM systems")
    parser.add_argument("--requests", type=int, default=256, help="requests per level (at least one per client)")
    parser.add_argument("--agent-requests", type=int, default=4000, help="requests for the trivial-agent level")
    parser.add_argument("--agent-concurrency", type=int, default=32, help="clients for the trivial-agent level")
    parser.add_argument("--agent-seconds", type=float, default=8.0, help="duration of the trivial-agent level under wrk")
    parser.add_argument("--no-wrk", action="store_true", help="load the trivial agents with the aiohttp client even when wrk is installed")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=1, help="run each LLM level this many times and keep the median (noisy machines)")
    parser.add_argument("--workers", default="1", help="servelm worker processes; a list (1,2) runs each servelm system once per value")
    parser.add_argument("--vllm-python", help="python of a venv with vllm (default: $SERVELM_VLLM_PYTHON, else this one)")
    parser.add_argument("--mlflow-python", help="python of a venv with mlflow (default: $SERVELM_MLFLOW_PYTHON, else this one)")
    parser.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument("--name", default="compare", help="file name stem of the results")
    args = parser.parse_args(argv)
    wanted = list(LLM_SYSTEMS + AGENT_SYSTEMS) if args.systems == "all" else [s.strip() for s in args.systems.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]
    pythons = {"vllm": python_with("vllm", args.vllm_python, "SERVELM_VLLM_PYTHON"), "mlflow": python_with("mlflow", args.mlflow_python, "SERVELM_MLFLOW_PYTHON")}
    skipped: dict[str, str] = {}
    for name in wanted:
        if name in ("vllm", "servelm-vllm") and pythons["vllm"] is None:
            skipped[name] = "vllm is not installed (give --vllm-python)"
        elif name == "servelm-vllm" and python_with("servelm.serving", pythons["vllm"]) != pythons["vllm"]:
            skipped[name] = "servelm is not installed in the vllm venv (pip install -e . there)"
        if name.startswith("mlflow") and pythons["mlflow"] is None:
            skipped[name] = "mlflow is not installed (give --mlflow-python)"
        if name == "servelm-onnx" and python_with("onnxruntime_genai") is None:
            skipped[name] = "onnxruntime-genai is not installed (pip install 'servelm[onnx]')"
    runnable = [n for n in wanted if n not in skipped]
    import servelm.agents

    work = tempfile.mkdtemp(prefix="servelm-compare-")
    report: dict[str, Any] = {
        "date": datetime.date.today().isoformat(), "argv": argv if argv is not None else sys.argv[1:],
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.system()}, Python {platform.python_version()}",
        "versions": {"servelm": servelm.agents.__version__, "onnxruntime-genai": version_of(PYTHON, "onnxruntime_genai"),
                     "transformers": version_of(PYTHON, "transformers"), "vllm": version_of(pythons["vllm"], "vllm"),
                     "mlflow": version_of(pythons["mlflow"], "mlflow")},
        "settings": {"concurrency": levels, "requests": args.requests, "agent_requests": args.agent_requests, "max_tokens": args.max_tokens,
                     "workers": args.workers, "repeat": args.repeat},
        "rows": [], "skipped": skipped,
    }
    try:
        models = prepare_models(work, runnable, pythons["mlflow"])
        for name in runnable:
            worker_counts = [int(w) for w in args.workers.split(",")] if name in ("servelm-transformers", "servelm-onnx", "servelm-agent") else [1]
            for workers in worker_counts:
                system = build_system(name, models, args, pythons, workers)
                try:
                    proc, base, _ = start(system, work)
                except RuntimeError as exc:
                    skipped[system.name] = str(exc)
                    print(f"skipped {system.name}: {exc}", file=sys.stderr)
                    continue
                try:
                    if system.kind == "llm":
                        report["rows"] += measure(system, base, levels, args.requests, args.repeat)
                    elif shutil.which("wrk") and not args.no_wrk:
                        report["rows"].append(measure_with_wrk(system, base, args.agent_concurrency, args.agent_seconds, work))
                    else:
                        report["rows"] += measure(system, base, [args.agent_concurrency], args.agent_requests)
                finally:
                    stop(proc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, f"{args.name}.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(args.out_dir, f"{args.name}.md"), "w") as f:
        f.write(markdown(report))
    report["plots"] = plots(report, args.out_dir, args.name)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
