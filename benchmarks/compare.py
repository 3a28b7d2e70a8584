"""Side by side: servelm's engines, vLLM and MLflow serving the same model under the same load.

    python benchmarks/compare.py [--model tiny|smollm2] [--workload fixed|real] [--systems all] \
        [--concurrency 1,8,32,64] [--points long@16,agent@16,long@32] [--requests 256] [--max-tokens 32] \
        [--workers 1] [--vllm-python PY] [--mlflow-python PY] [--out-dir benchmarks/results] [--name NAME]

Builds the models itself (``--model tiny``: a random Llama with hidden 64 and 2 layers, which measures
request and scheduling overhead; ``--model smollm2``: SmolLM2-135M-Instruct from the package index, real
work) and a trivial echo ChatAgent, then starts each system on loopback, one after another in this one
run, drives it with benchmarks/serve.py (aiohttp; vLLM's `bench serve` metrics) at each client count
and each extra point (``WORKLOAD@CLIENTS``), samples the memory of its process tree, stops it, and writes
JSON, a markdown table with the target ratios (benchmarks/report.py), and PNG plots under --out-dir.

Systems (benchmarks/systems.py; those whose software is missing are skipped and listed as such):
  servelm-transformers, servelm-onnx, servelm-vllm  servelm serve with each engine (streamed, ignore_eos)
  servelm-transformers-int8   the transformers engine with --quantization int8 (int8 linear layers)
  servelm-transformers-traced servelm-transformers with OpenTelemetry tracing on (spans exported over OTLP to a
                        sink beside it, benchmarks/otlp_sink.py): the A/B of tracing's cost
  servelm-onnx-int4     the onnx engine on an int4 export (weights as 4-bit blocks, like the GGUF checkpoint's)
  vllm                  vLLM's own OpenAI server (python -m vllm.entrypoints.openai.api_server)
  servelm-llamacpp      servelm serve --engine llamacpp on the GGUF (SmolLM2's Q4_1 file as it is; the tiny one fp32)
  llamacpp              llama.cpp's own server (the xllamacpp wheel's) on the same GGUF, an HTTP thread per slot
  mlflow-transformers   mlflow models serve of the same model saved by mlflow.transformers (no streaming)
  servelm-agent, mlflow-agent   the trivial ChatAgent, non-streamed, at --agent-concurrency (request overhead)
vLLM and MLflow may live in their own venvs: --vllm-python / --mlflow-python (or SERVELM_VLLM_PYTHON /
SERVELM_MLFLOW_PYTHON) name their interpreters.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from json_report import provenance  # noqa: E402
from measure import measure, measure_with_wrk  # noqa: E402
from report import markdown, plots  # noqa: E402
from serve import WORKLOADS  # noqa: E402
from systems import (  # noqa: E402
    AGENT_SYSTEMS,
    BASELINE,
    LLM_SYSTEMS,
    MODELS,
    PYTHON,
    build_system,
    prepare_models,
    python_with,
    start,
    stop,
    version_of,
)


def parse_points(spec: str) -> list[tuple[str, int]]:
    """``long@16,agent@16`` as [("long", 16), ("agent", 16)]."""
    points = []
    for item in filter(None, (p.strip() for p in spec.split(","))):
        workload, _, clients = item.partition("@")
        if workload not in WORKLOADS or not clients.isdigit():
            raise SystemExit(f"--points: {item!r} is not WORKLOAD@CLIENTS with a workload of {', '.join(WORKLOADS)}")
        points.append((workload, int(clients)))
    return points


def baseline_commit(python: str) -> str:
    """The commit of the checkout whose venv ``python`` belongs to (its servelm installed in place)."""
    import subprocess

    where = subprocess.run(
        [python, "-c", "import os, servelm.agents as a; print(os.path.dirname(os.path.dirname(a.__file__)))"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=where or None)
    return found.stdout.strip() or "unknown"


def kv_bytes_per_token(checkpoint: str) -> dict[str, int]:
    """KV-cache bytes one token needs, by system: vLLM and servelm's transformers engine (int8 too) store it
    in bf16 here (the transformers engine in fp32 where the CPU lacks native bf16); the onnx engine in bf16
    where it cuts the export at its attention nodes (a CPU with avx512_bf16), else in the export's fp32."""
    from servelm.flavors.engine.attention.bf16_intrinsics import has_bf16_dot
    from servelm.flavors.transformers.device import cpu_has_native_bf16

    with open(os.path.join(checkpoint, "config.json")) as f:
        config = json.load(f)
    heads = config["num_attention_heads"]
    per_token = (
        2
        * config["num_hidden_layers"]
        * config.get("num_key_value_heads", heads)
        * config.get("head_dim", config["hidden_size"] // heads)
    )
    transformers = 2 if cpu_has_native_bf16() else 4
    onnx = 2 if has_bf16_dot() else 4
    return {
        "servelm-transformers": per_token * transformers,
        "servelm-transformers-traced": per_token * transformers,
        "servelm-transformers-int8": per_token * transformers,
        "servelm-onnx": per_token * onnx,
        "servelm-onnx-int4": per_token * onnx,
        "servelm-vllm": per_token * 2,
        "vllm": per_token * 2,
    }


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--systems", default="all", help=f"comma-separated, or all: {', '.join(LLM_SYSTEMS + AGENT_SYSTEMS)}"
    )
    parser.add_argument("--model", default="tiny", choices=MODELS, help="the checkpoint every LLM system serves")
    parser.add_argument(
        "--workload", default="fixed", choices=WORKLOADS, help="the prompts of the main levels (benchmarks/serve.py)"
    )
    parser.add_argument("--concurrency", default="1,8,32,64", help="client counts for the LLM systems")
    parser.add_argument(
        "--point-repeat", type=int, default=1, help="runs of each extra point (the median is kept, as --repeat)"
    )
    parser.add_argument(
        "--points", default="", help="extra LLM points after the main levels, e.g. long@16,agent@16,long@32"
    )
    parser.add_argument("--requests", type=int, default=256, help="requests per level (at least two per client)")
    parser.add_argument("--agent-requests", type=int, default=4000, help="requests for the trivial-agent level")
    parser.add_argument("--agent-concurrency", type=int, default=32, help="clients for the trivial-agent level")
    parser.add_argument(
        "--agent-seconds", type=float, default=8.0, help="duration of the trivial-agent level under wrk"
    )
    parser.add_argument(
        "--no-wrk",
        action="store_true",
        help="load the trivial agents with the aiohttp client even when wrk is installed",
    )
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--repeat", type=int, default=1, help="run each LLM level this many times and keep the median (noisy machines)"
    )
    parser.add_argument(
        "--workers", default="1", help="servelm worker processes; a list (1,2) runs each servelm system once per value"
    )
    parser.add_argument(
        "--servelm-threads",
        type=int,
        default=None,
        help="servelm serve --threads for its CPU engines (default: servelm's)",
    )
    parser.add_argument("--onnx-precision", default="fp32", help="precision of the onnx export (fp32, int8, int4)")
    parser.add_argument("--vllm-kv-gib", type=int, default=4, help="VLLM_CPU_KVCACHE_SPACE for vLLM on CPU (GiB)")
    parser.add_argument(
        "--max-model-len", type=int, default=None, help="--max-model-len for vLLM (default: the model's)"
    )
    parser.add_argument(
        "--vllm-python", help="python of a venv with vllm (default: $SERVELM_VLLM_PYTHON, else this one)"
    )
    parser.add_argument(
        "--mlflow-python", help="python of a venv with mlflow (default: $SERVELM_MLFLOW_PYTHON, else this one)"
    )
    parser.add_argument(
        "--baseline-python",
        help="python of another checkout's venv: a system named NAME@base is NAME run by it (before/after in one run)",
    )
    parser.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument("--name", default="compare", help="file name stem of the results")
    args = parser.parse_args(argv)
    wanted = (
        list(LLM_SYSTEMS + AGENT_SYSTEMS) if args.systems == "all" else [s.strip() for s in args.systems.split(",")]
    )
    levels = [int(c) for c in args.concurrency.split(",")]
    points = parse_points(args.points)
    pythons = {
        "vllm": python_with("vllm", args.vllm_python, "SERVELM_VLLM_PYTHON"),
        "mlflow": python_with("mlflow", args.mlflow_python, "SERVELM_MLFLOW_PYTHON"),
    }
    skipped: dict[str, str] = {}
    for name in wanted:
        if name.endswith(BASELINE) and not args.baseline_python:
            skipped[name] = "no --baseline-python given"
        if name in ("vllm", "servelm-vllm") and pythons["vllm"] is None:
            skipped[name] = "vllm is not installed (give --vllm-python)"
        elif name == "servelm-vllm" and python_with("servelm.serving", pythons["vllm"]) != pythons["vllm"]:
            skipped[name] = "servelm is not installed in the vllm venv (pip install -e . there)"
        if name.startswith("mlflow") and pythons["mlflow"] is None:
            skipped[name] = "mlflow is not installed (give --mlflow-python)"
        if name.startswith("servelm-onnx") and python_with("onnxruntime_genai") is None:
            skipped[name] = "onnxruntime-genai is not installed (pip install 'servelm[onnx]')"
        if name in ("llamacpp", "servelm-llamacpp") and python_with("xllamacpp") is None:
            skipped[name] = "llama.cpp's wheel is not installed (pip install 'servelm[llamacpp]')"
    runnable = [n for n in wanted if n not in skipped]
    import servelm.agents

    work = tempfile.mkdtemp(prefix="servelm-compare-")
    report: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "argv": argv if argv is not None else sys.argv[1:],
        "machine": (
            f"{os.cpu_count()} cores, {platform.machine()}, {platform.system()}, Python {platform.python_version()}"
        ),
        "versions": {
            "servelm": servelm.agents.__version__,
            "onnxruntime-genai": version_of(PYTHON, "onnxruntime_genai"),
            "transformers": version_of(PYTHON, "transformers"),
            "vllm": version_of(pythons["vllm"], "vllm"),
            "xllamacpp": version_of(PYTHON, "xllamacpp"),
            "mlflow": version_of(pythons["mlflow"], "mlflow"),
        },
        "settings": {
            "model": args.model,
            "workload": args.workload,
            "concurrency": levels,
            "points": args.points,
            "requests": args.requests,
            "agent_requests": args.agent_requests,
            "max_tokens": args.max_tokens,
            "workers": args.workers,
            "repeat": args.repeat,
            "point_repeat": args.point_repeat,
            "onnx_precision": args.onnx_precision,
            "servelm_threads": args.servelm_threads,
            "baseline_python": args.baseline_python,
        },
        "rows": [],
        "skipped": skipped,
        "provenance": provenance(),
    }
    if args.baseline_python:
        report["provenance"]["baseline_commit"] = baseline_commit(args.baseline_python)
    try:
        models = prepare_models(work, runnable, pythons["mlflow"], args.model, args.onnx_precision)
        report["settings"]["kv_bytes_per_token"] = kv_bytes_per_token(models["hf"])
        for name in runnable:
            worker_counts = (
                [int(w) for w in args.workers.split(",")]
                if name.startswith(("servelm-transformers", "servelm-onnx", "servelm-agent"))
                else [1]
            )
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
                        report["rows"] += measure(system, base, levels, args.requests, args.repeat, args.workload, proc)
                        for workload, clients in points:
                            for row in measure(
                                system, base, [clients], args.requests // 2, args.point_repeat, workload, proc
                            ):
                                report["rows"].append({**row, "extra_point": True})
                    elif shutil.which("wrk") and not args.no_wrk:
                        report["rows"].append(
                            measure_with_wrk(system, base, args.agent_concurrency, args.agent_seconds, work)
                        )
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
