"""The ``servelm`` command line: ``serve`` a model directory, run the ``demo``, print the ``version``."""

from __future__ import annotations

import json
import logging
import os
import signal
from typing import Any, Optional

import typer

app = typer.Typer(help="servelm: serve LLMs and agents behind an OpenAI-compatible API.", no_args_is_help=True, add_completion=False)
_SETTINGS_ENV = "SERVELM_SERVE_SETTINGS"


@app.command()
def serve(
    model: str = typer.Option(..., "-m", "--model", help="Model directory: a servelm/MLflow model, or a Hugging Face checkpoint."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    api_key: Optional[str] = typer.Option(None, help="Require 'Authorization: Bearer KEY' (default: env SERVELM_API_KEY)."),
    served_model_name: Optional[str] = typer.Option(None, help="Model name clients use (default: the directory name)."),
    max_concurrency: int = typer.Option(64, help="Requests running at once."),
    max_queue: int = typer.Option(256, help="Requests waiting for a slot before 429."),
    timeout: float = typer.Option(600.0, help="Seconds a request may take before 504."),
    workers: int = typer.Option(1, help="Server processes (each loads the model)."),
    engine: Optional[str] = typer.Option(None, help="Force an engine: pyfunc, transformers, onnx, vllm."),
    max_num_seqs: int = typer.Option(64, help="LLM engines: sequences decoded together in one batch."),
    device: Optional[str] = typer.Option(None, help="LLM engines: cpu or cuda[:N] (default: cuda when available); for onnx the execution provider (cpu, cuda, dml, ...)."),
    threads: Optional[int] = typer.Option(None, help="LLM engines on CPU: torch or onnxruntime threads (default: half the cores)."),
    max_model_len: Optional[int] = typer.Option(None, help="vllm engine: context length to serve (default: the model's)."),
    gpu_memory_utilization: Optional[float] = typer.Option(None, help="vllm engine: share of GPU memory vLLM may take."),
    dtype: Optional[str] = typer.Option(None, help="vllm / transformers engines: weight dtype (auto, float16, bfloat16, float32)."),
    tensor_parallel_size: Optional[int] = typer.Option(None, help="vllm engine: GPUs to shard the model over."),
    enforce_eager: bool = typer.Option(False, help="vllm engine: skip graph capture / compilation (faster start, slower steps)."),
    graceful_timeout: float = typer.Option(30.0, help="Seconds to finish in-flight requests on SIGTERM."),
    log_level: str = typer.Option("info", help="Log level: debug, info, warning, error."),
) -> None:
    """Serve a model directory on /v1/chat/completions, /v1/responses, /v1/models and /invocations."""
    import uvicorn

    from servelm.flavors import ModelFormatError

    from .loading import choose_engine

    try:
        chosen = choose_engine(os.path.abspath(model), engine)  # fail fast on a bad directory, before binding a port
        if chosen == "vllm":
            from .vllm_engine import INSTALL_HINT, vllm_available

            if not vllm_available():
                raise ModelFormatError(INSTALL_HINT)
    except ModelFormatError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    settings = {"served_model_name": served_model_name, "api_key": api_key or os.environ.get("SERVELM_API_KEY"), "max_concurrency": max_concurrency,
                "max_queue": max_queue, "timeout": timeout, "engine": engine,
                "engine_options": {"max_num_seqs": max_num_seqs, "device": device, "threads": threads, "max_model_len": max_model_len,
                                   "gpu_memory_utilization": gpu_memory_utilization, "dtype": dtype, "tensor_parallel_size": tensor_parallel_size,
                                   "enforce_eager": enforce_eager or None}}
    os.environ[_SETTINGS_ENV] = json.dumps({"model": os.path.abspath(model), "settings": settings})
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal: handle it so a drained
    # shutdown exits 0, as process managers expect.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.run("servelm.serving.cli:app_from_env", factory=True, host=host, port=port, workers=workers, log_level=log_level,
                timeout_graceful_shutdown=graceful_timeout, access_log=log_level == "debug")


def app_from_env() -> Any:
    """The app factory uvicorn calls in each worker, configured through the environment."""
    from .app import create_app

    spec = json.loads(os.environ[_SETTINGS_ENV])
    return create_app(spec["model"], **spec["settings"])


@app.command()
def demo(
    port: int = typer.Option(0, help="Port for the demo server (0: a free one)."),
    question: str = typer.Option("Hello from the servelm quickstart!", help="What to ask the example agent."),
    llm: bool = typer.Option(True, help="Also build, package and serve a tiny LLM (needs servelm[transformers])."),
    hf_model: Optional[str] = typer.Option(None, help="Use this Hugging Face model id or local checkpoint instead of the tiny LLM (needs network for a hub id)."),
) -> None:
    """Save an example agent and a tiny LLM, serve each on loopback, and ask them through the openai client."""
    from .demo import run_demo

    run_demo(port, question, llm, hf_model)


@app.command()
def version() -> None:
    """Print servelm's version."""
    from servelm.agents import __version__

    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
