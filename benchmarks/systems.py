"""The systems benchmarks/compare.py runs: how each is started on the same model, health-checked, loaded
with benchmarks/serve.py (a fresh client process per level) while its memory is sampled, and stopped."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import httpx

logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health poll otherwise

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve import PROMPT  # noqa: E402

PYTHON = os.path.abspath(sys.executable)  # children run in other directories: never a relative interpreter path
LLM_SYSTEMS = (
    "servelm-transformers",
    "servelm-onnx",
    "servelm-onnx-int4",
    "servelm-vllm",
    "vllm",
    "mlflow-transformers",
)
AGENT_SYSTEMS = ("servelm-agent", "mlflow-agent")
VLLM_ENV = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "VLLM_HOST_IP": "127.0.0.1"}
MODELS = ("tiny", "smollm2")  # a random tiny Llama (hidden 64, 2 layers), or SmolLM2-135M-Instruct

SERVELM_AGENT = """
from servelm.agents import ChatAgent, ChatAgentMessage, ChatAgentResponse
from servelm.flavors import set_model


class Echo(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content=messages[-1].content, id="msg-1")])


set_model(Echo())
"""
MLFLOW_AGENT = """
import mlflow
from mlflow.pyfunc import ChatAgent
from mlflow.types.agent import ChatAgentMessage, ChatAgentResponse


class Echo(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content=messages[-1].content, id="msg-1")])


mlflow.models.set_model(Echo())
"""
MLFLOW_SAVE = """
import sys, mlflow
from transformers import AutoModelForCausalLM, AutoTokenizer
source, agent_code, out_llm, out_agent = sys.argv[1:5]
mlflow.pyfunc.save_model(out_agent, python_model=agent_code, pip_requirements=["mlflow"])
model, tokenizer = AutoModelForCausalLM.from_pretrained(source), AutoTokenizer.from_pretrained(source)
mlflow.transformers.save_model({"model": model, "tokenizer": tokenizer}, out_llm, task="llm/v1/chat", pip_requirements=["torch", "transformers"])
"""


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
        if not candidate:
            continue
        candidate = (
            os.path.abspath(candidate) if os.sep in candidate else candidate
        )  # children run in other directories
        if subprocess.run([candidate, "-c", f"import {module}"], capture_output=True).returncode == 0:
            return candidate
    return None


def version_of(python: Optional[str], module: str) -> Optional[str]:
    if python is None:
        return None
    out = subprocess.run(
        [python, "-c", f"import {module}; print({module}.__version__)"], capture_output=True, text=True
    )
    return out.stdout.strip() or None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------- models
def prepare_models(
    work: str, systems: list[str], mlflow_python: Optional[str], model: str = "tiny", onnx_precision: str = "fp32"
) -> dict[str, str]:
    """Model directories for the chosen systems, built in ``work`` from the same checkpoint."""
    from servelm.flavors.transformers import save_model as save_transformers
    from servelm.flavors.transformers import smollm2, tiny_model

    models: dict[str, str] = {"hf": tiny_model("llama") if model == "tiny" else smollm2()}
    models["transformers"] = os.path.join(work, "llm-transformers")
    save_transformers(models["hf"], models["transformers"])
    for system, precision in (("servelm-onnx", onnx_precision), ("servelm-onnx-int4", "int4")):
        if system in systems:
            from servelm.flavors.onnx import export
            from servelm.flavors.onnx import save_model as save_onnx

            key = system.removeprefix("servelm-")
            models[key] = os.path.join(work, f"llm-{key}")
            save_onnx(export(models["hf"], os.path.join(work, f"genai-{key}"), precision=precision), models[key])
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
        models["mlflow-transformers"], models["mlflow-agent"] = (
            os.path.join(work, "mlflow-transformers"),
            os.path.join(work, "mlflow-agent"),
        )
        subprocess.run(
            [
                mlflow_python,
                "-c",
                MLFLOW_SAVE,
                models["hf"],
                code,
                models["mlflow-transformers"],
                models["mlflow-agent"],
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "MLFLOW_TRACKING_URI": f"file://{work}/mlruns"},
        )
    return models


def build_system(
    name: str, models: dict[str, str], args: argparse.Namespace, pythons: dict[str, Optional[str]], workers: int
) -> System:
    """The command line, environment and request body of one system."""
    llm_body = {
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": args.max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    agent_body = {"messages": [{"role": "user", "content": "Say hello to the benchmark."}]}
    servelm = [PYTHON, "-m", "servelm.serving.cli", "serve", "--log-level", "warning", "--workers", str(workers)]
    if args.servelm_threads:
        servelm += ["--threads", str(args.servelm_threads)]
    one_thread = {"OMP_NUM_THREADS": "1"}
    vllm_env = {**VLLM_ENV, "VLLM_CPU_KVCACHE_SPACE": str(args.vllm_kv_gib)}
    vllm_args = ["--max-model-len", str(args.max_model_len)] if args.max_model_len else []
    label = f"{name} ({workers} workers)" if workers > 1 else name

    def llm(label: str, argv: list[str], env: dict[str, str], startup_timeout: float = 120.0) -> System:
        """A system answering streamed chat completions as model "tiny"."""
        return System(
            label,
            "llm",
            argv,
            "/v1/chat/completions",
            {**llm_body, "model": "tiny"},
            True,
            env,
            startup_timeout=startup_timeout,
        )

    named = ["--served-model-name", "tiny"]
    if name in ("servelm-transformers", "servelm-onnx", "servelm-onnx-int4"):
        return llm(label, servelm + ["-m", models[name.removeprefix("servelm-")]] + named, one_thread)
    if name == "servelm-vllm":
        argv = [
            pythons["vllm"] or "",
            "-m",
            "servelm.serving.cli",
            "serve",
            "--log-level",
            "warning",
            "--engine",
            "vllm",
            "-m",
            models["transformers"],
        ]
        return llm(name, argv + named + vllm_args, vllm_env, 400)
    if name == "vllm":
        argv = [
            pythons["vllm"] or "",
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            models["hf"],
            "--host",
            "127.0.0.1",
        ]
        return llm(name, argv + named + vllm_args, vllm_env, 400)
    mlflow_env = {
        "PATH": os.path.dirname(pythons["mlflow"] or PYTHON) + os.pathsep + os.environ.get("PATH", "")
    }  # it execs `uvicorn`
    if name == "mlflow-transformers":  # MLflow cannot stream, and its sampler refuses temperature 0
        argv = [
            pythons["mlflow"] or "",
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            models["mlflow-transformers"],
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
        ]
        return System(
            name,
            "llm",
            argv,
            "/invocations",
            {"messages": llm_body["messages"], "max_tokens": args.max_tokens},
            False,
            {**one_thread, **mlflow_env},
            "/ping",
            180,
        )
    if name == "servelm-agent":
        return System(
            label, "agent", servelm + ["-m", models["servelm-agent"]], "/v1/chat/completions", agent_body, False
        )
    if name == "mlflow-agent":
        argv = [
            pythons["mlflow"] or "",
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            models["mlflow-agent"],
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
        ]
        return System(name, "agent", argv, "/invocations", agent_body, False, mlflow_env, "/ping", 180)
    raise ValueError(f"unknown system {name!r}")


# ---------------------------------------------------------------------------------------------- running
def start(system: System, work: str) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start a system on a free port; (process, base URL, log path) once it answers its health check."""
    port = free_port()
    argv = system.argv + (["--port", str(port)] if "mlflow" not in system.argv else ["-p", str(port)])
    env = {**os.environ, **system.env}
    if "VLLM_HOST_IP" in system.env:
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
            healthy = (
                healthy + 1
                if httpx.get(base + system.health, timeout=2, headers={"Connection": "close"}).status_code == 200
                else 0
            )
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
        f.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = '
            + json.dumps(json.dumps(system.body))
            + "\n"
        )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--latency", "-s", script, base + system.path],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout

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
    row = {
        "concurrency": clients,
        "requests": total,
        "failures": bad,
        "duration_s": seconds,
        "request_throughput": rate,
        "output_tokens": 0,
        "output_throughput": 0.0,
        "e2e_mean_s": None,
        "e2e_p50_s": latency("50%"),
        "e2e_p99_s": latency("99%"),
        "load_tool": "wrk",
    }
    row.update(system=system.name, kind=system.kind, stream=False, route=system.path)
    print(json.dumps(row), flush=True)
    return row


def measure(
    system: System,
    base: str,
    levels: list[int],
    requests: int,
    repeat: int = 1,
    workload: str = "fixed",
    proc: Optional[subprocess.Popen[bytes]] = None,
    salt: str = "",
) -> list[dict[str, Any]]:
    """One row per concurrency level from benchmarks/serve.py, run in a fresh process per level (a load
    client sharing its heap would spend its time in the garbage collector). With ``repeat`` > 1 the
    levels run that many times over and each level's row is the run with the median throughput (all
    runs are kept under ``runs``). With ``proc``, the memory of the server's process tree is sampled
    while each level runs (``rss_before_mb``, ``peak_rss_mb``). Each level sends at least two requests per
    client (a steady state, not one burst), and each run its own prompts (``salt``): no server's prefix
    cache sees a prompt twice."""
    if repeat > 1:
        rounds = [measure(system, base, levels, requests, 1, workload, proc, f"{salt}r{i}") for i in range(repeat)]
        rows = []
        for i in range(len(levels)):
            runs = sorted((r[i] for r in rounds), key=lambda r: r["output_throughput"] or r["request_throughput"])
            rows.append(
                {
                    **runs[len(runs) // 2],
                    "runs": [
                        {k: r[k] for k in ("output_throughput", "request_throughput", "ttft_p50_s") if k in r}
                        for r in runs
                    ],
                }
            )
        return rows
    rows = []
    for level in levels:
        argv = [
            PYTHON,
            os.path.join(os.path.dirname(os.path.abspath(__file__)), "serve.py"),
            "--url",
            base,
            "--path",
            system.path,
            "--concurrency",
            str(level),
            "--requests",
            str(max(requests, 2 * level)),
            "--body",
            json.dumps(system.body),
            "--workload",
            workload,
            "--salt",
            salt,
        ] + (["--stream"] if system.stream else [])
        sampler = MemorySampler(proc.pid) if proc is not None else None
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=7200)
        finally:
            memory = sampler.stop() if sampler is not None else {}
        if out.returncode != 0:
            raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row.update(
            system=system.name, kind=system.kind, stream=system.stream, route=system.path, load_tool="aiohttp", **memory
        )
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (from /proc; 0 where it cannot be read)."""
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total


class MemorySampler:
    """Samples ``tree_rss(pid)`` every 0.2 s on a thread until stopped; reports the first and the peak."""

    def __init__(self, pid: int):
        self.pid = pid
        self.before = tree_rss(pid)
        self.peak = self.before
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.2):
            self.peak = max(self.peak, tree_rss(self.pid))

    def stop(self) -> dict[str, float]:
        self._done.set()
        self._thread.join()
        return {"rss_before_mb": round(self.before / 2**20, 1), "peak_rss_mb": round(self.peak / 2**20, 1)}
