"""The systems benchmarks/compare.py runs: how each is started on the same model, health-checked and
stopped (``measure.py`` loads them)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import httpx

logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health poll otherwise

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve import PROMPT  # noqa: E402

OTLP_SINK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "otlp_sink.py")
PYTHON = os.path.abspath(sys.executable)  # children run in other directories: never a relative interpreter path
LLM_SYSTEMS = (
    "servelm-transformers",
    "servelm-transformers-traced",
    "servelm-transformers-int8",
    "servelm-onnx",
    "servelm-onnx-int4",
    "servelm-vllm",
    "vllm",
    "servelm-llamacpp",
    "llamacpp",
    "mlflow-transformers",
)
AGENT_SYSTEMS = ("servelm-agent", "mlflow-agent")
BASELINE = "@base"  # a system name's suffix: that system run by the baseline checkout's python
#: llama.cpp's slots (sequences decoded together) and the tokens of KV cache they share, for both llama.cpp systems
LLAMACPP_SLOTS = 64
LLAMACPP_CONTEXT = 16384
#: llama.cpp's own server (its HTTP server, from the xllamacpp wheel), with an HTTP thread per slot: with its default
#: it drops about a third of the requests at 8-32 clients. ``--port`` is appended by ``start``.
LLAMACPP_SERVER = """
import os, signal, sys, threading, xllamacpp
p = xllamacpp.CommonParams()
p.model.path = {gguf!r}
p.n_parallel = {slots}
p.kv_unified = True
p.n_ctx = {context}
p.n_threads_http = {slots} + 4
p.cpuparams.n_threads = {threads} or os.cpu_count()
p.cpuparams_batch.n_threads = {threads} or os.cpu_count()
p.port = int(sys.argv[sys.argv.index("--port") + 1])
server = xllamacpp.Server(p)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
"""
VLLM_ENV = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "VLLM_HOST_IP": "127.0.0.1"}
# a random tiny Llama (hidden 64, 2 layers), SmolLM2-135M-Instruct, or a random model of SmolLM2's layers (the tiny
# tokenizer's vocabulary; for machines without a package index: flavors/transformers/tiny.py)
MODELS = ("tiny", "smollm2", "smollm2-shape")

SERVELM_AGENT = """
from servelm.agents import ChatAgent, ChatAgentMessage, ChatAgentResponse
from servelm.flavors import set_model


class Echo(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        return ChatAgentResponse(
            messages=[ChatAgentMessage(role="assistant", content=messages[-1].content, id="msg-1")]
        )


set_model(Echo())
"""
MLFLOW_AGENT = """
import mlflow
from mlflow.pyfunc import ChatAgent
from mlflow.types.agent import ChatAgentMessage, ChatAgentResponse


class Echo(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        return ChatAgentResponse(
            messages=[ChatAgentMessage(role="assistant", content=messages[-1].content, id="msg-1")]
        )


mlflow.models.set_model(Echo())
"""
MLFLOW_SAVE = """
import sys, mlflow
from transformers import AutoModelForCausalLM, AutoTokenizer
source, agent_code, out_llm, out_agent = sys.argv[1:5]
mlflow.pyfunc.save_model(out_agent, python_model=agent_code, pip_requirements=["mlflow"])
model, tokenizer = AutoModelForCausalLM.from_pretrained(source), AutoTokenizer.from_pretrained(source)
mlflow.transformers.save_model(
    {"model": model, "tokenizer": tokenizer}, out_llm, task="llm/v1/chat", pip_requirements=["torch", "transformers"]
)
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
    fresh_connections: bool = False  # a new connection per request (llama.cpp's server drops kept-alive ones)


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
    from servelm.flavors.transformers import smollm2, smollm2_shaped, tiny_model

    hf = {"tiny": lambda: tiny_model("llama"), "smollm2": smollm2, "smollm2-shape": smollm2_shaped}[model]
    models: dict[str, str] = {"hf": hf()}
    models["transformers"] = os.path.join(work, "llm-transformers")
    save_transformers(models["hf"], models["transformers"])
    for system, precision in (("servelm-onnx", onnx_precision), ("servelm-onnx-int4", "int4")):
        if system in systems:
            from servelm.flavors.onnx import export
            from servelm.flavors.onnx import save_model as save_onnx

            key = system.removeprefix("servelm-")
            models[key] = os.path.join(work, f"llm-{key}")
            save_onnx(export(models["hf"], os.path.join(work, f"genai-{key}"), precision=precision), models[key])
    if {"servelm-llamacpp", "llamacpp"} & set(systems):  # the GGUF itself: SmolLM2's Q4_1 file, the tiny one in fp32
        if model == "tiny":
            from servelm.flavors.transformers.gguf_export import export_gguf

            models["gguf"] = export_gguf(models["hf"], os.path.join(work, "tiny.gguf"))
        else:
            from servelm.flavors.transformers.smollm import smollm2_gguf

            models["gguf"] = smollm2_gguf()
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
    """The command line, environment and request body of one system. ``NAME@base`` is system NAME run by
    ``args.baseline_python`` (another checkout's servelm, for before/after ratios in one run)."""
    if name.endswith(BASELINE):
        system = build_system(name.removesuffix(BASELINE), models, args, pythons, workers)
        system.argv = [args.baseline_python if part == PYTHON else part for part in system.argv]
        system.name += BASELINE
        return system
    llm_body = {
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": args.max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    agent_body = {"messages": [{"role": "user", "content": "Say hello to the benchmark."}]}
    agent_servelm = [PYTHON, "-m", "servelm.serving.cli", "serve", "--log-level", "warning", "--workers", str(workers)]
    servelm = agent_servelm + (["--threads", str(args.servelm_threads)] if args.servelm_threads else [])
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
    if name == "servelm-transformers-traced":
        # servelm-transformers with OpenTelemetry tracing on: every request's spans exported over OTLP to a sink
        # started beside it (in its process group: stopped with it)
        sink = free_port()
        traced = {
            **one_thread,
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{sink}/v1/traces",
            "OTEL_SERVICE_NAME": "servelm-bench",
        }
        launcher = ["/bin/sh", "-c", f'"{PYTHON}" "{OTLP_SINK}" {sink} & exec "$@"', "sh"]
        return llm(label, launcher + servelm + ["-m", models["transformers"]] + named, traced)
    if name == "servelm-transformers-int8":
        return llm(label, servelm + ["-m", models["transformers"], "--quantization", "int8"] + named, one_thread)
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
    if name == "servelm-llamacpp":
        argv = servelm + ["-m", models["gguf"], "--engine", "llamacpp", "--max-num-seqs", str(LLAMACPP_SLOTS)]
        return llm(label, argv + named + ["--max-model-len", str(LLAMACPP_CONTEXT)], {}, 300)
    if name == "llamacpp":
        code = LLAMACPP_SERVER.format(
            gguf=models["gguf"], slots=LLAMACPP_SLOTS, context=LLAMACPP_CONTEXT, threads=args.servelm_threads or 0
        )
        return System(
            name,
            "llm",
            [PYTHON, "-c", code],
            "/v1/chat/completions",
            {**llm_body, "model": "tiny"},
            True,
            {},
            "/health",
            300,
            fresh_connections=True,
        )
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

    def mlflow_serve(model_dir: str) -> list[str]:
        """``mlflow models serve`` of ``model_dir`` in MLflow's interpreter, on loopback."""
        python = pythons["mlflow"] or ""
        return [python, "-m", "mlflow", "models", "serve", "-m", model_dir, "--env-manager", "local", "-h", "127.0.0.1"]

    if name == "mlflow-transformers":  # MLflow cannot stream, and its sampler refuses temperature 0
        return System(
            name,
            "llm",
            mlflow_serve(models["mlflow-transformers"]),
            "/invocations",
            {"messages": llm_body["messages"], "max_tokens": args.max_tokens},
            False,
            {**one_thread, **mlflow_env},
            "/ping",
            180,
        )
    if name == "servelm-agent":
        return System(
            label, "agent", agent_servelm + ["-m", models["servelm-agent"]], "/v1/chat/completions", agent_body, False
        )
    if name == "mlflow-agent":
        return System(
            name,
            "agent",
            mlflow_serve(models["mlflow-agent"]),
            "/invocations",
            agent_body,
            False,
            mlflow_env,
            "/ping",
            180,
        )
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
