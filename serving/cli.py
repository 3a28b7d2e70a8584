"""The ``servelm`` command line: ``serve`` a model directory, ``predict`` a file with it, run the
``demo``; ``--version``.

``serve``'s flags are generated from ``ServerOptions`` and ``EngineOptions`` (serving/options.py), the
one place their names, types, defaults and help live.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import sys
import tempfile
from typing import Any, Optional

import typer

from .options import EngineOptions, ServerOptions, cli_parameters, split_options

# Click's plain help, not rich's tables: rich cuts option names to fit 80 columns ("--served-model-na…")
app = typer.Typer(
    help="servelm: serve LLMs and agents behind an OpenAI-compatible API.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
_SPEC_ENV = "SERVELM_SERVE_SPEC"  # how `serve --workers N` hands the model and options to its workers


def _print_version(value: bool) -> None:
    if value:
        from servelm.agents import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print servelm's version and exit."
    ),
) -> None:
    """servelm: serve LLMs and agents behind an OpenAI-compatible API."""


def serve(model: Optional[list[str]], config: Optional[str], **given: Any) -> None:
    """Serve model directories on /v1/chat/completions, /v1/completions, /v1/responses, /v1/models and /invocations."""
    from servelm.flavors import ModelFormatError

    from .logs import configure_logging
    from .serve_config import read_serve_config, specs_from_flags
    from .services.build import choose_engine, gpu_workers_refusal

    try:
        fields = {k: v for k, v in given.items() if v is not None}
        if config is not None:
            server, specs = read_serve_config(config, fields, extra_models=model or [])
        else:
            if not model:
                raise ValueError("name a model to serve: -m DIR (several: -m NAME=DIR -m ...), or --config FILE")
            server, engine = split_options(**fields)
            specs = specs_from_flags(model, engine)
        from servelm.flavors.uri import resolve_model_uri

        for spec in specs:
            spec.model = os.path.abspath(resolve_model_uri(spec.model))  # runs:/, models:/, s3://... through MLflow
            # fail fast on a bad directory, before binding
            chosen = choose_engine(spec.model, spec.engine.engine, spec.engine.device)
            if chosen == "vllm":
                from .engines.vllm import INSTALL_HINT, vllm_available

                if not vllm_available():
                    raise ModelFormatError(INSTALL_HINT)
            refusal = gpu_workers_refusal(server.workers, chosen, spec.engine.device)
            if refusal:
                raise ValueError(refusal)
    except (ModelFormatError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(server.log_level)
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal: handle it so a drained
    # shutdown exits 0, as process managers expect.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    served: Any = specs[0].model if len(specs) == 1 and specs[0].name is None else specs
    engine = specs[0].engine
    failure = _serve_one(served, server, engine) if server.workers == 1 else _serve_workers(served, server, engine)
    if failure:
        typer.echo(f"error: {failure}", err=True)
        raise typer.Exit(1)


serve.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        inspect.Parameter(
            "model",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Optional[list[str]],
            default=typer.Option(
                None,
                "-m",
                "--model",
                help="Model directory (a servelm/MLflow model, or a Hugging Face checkpoint), .gguf file, "
                "or a model URI MLflow resolves (runs:/, models:/, s3://...). Repeat to serve several: "
                "-m agent_dir -m smollm2=llm_dir (NAME=PATH names one; requests pick a model by name).",
            ),
        ),
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Optional[str],
            default=typer.Option(
                None,
                "--config",
                help="YAML file naming the models to serve and their options (models: [{model: DIR, name: N, "
                "engine: ..., max_num_seqs: ..., max_concurrency: ...}], and any server option); flags given "
                "beside it override its server options.",
            ),
        ),
    ]
    + cli_parameters(ServerOptions, EngineOptions)
)
serve.__annotations__ = {
    p.name: p.annotation
    for p in serve.__signature__.parameters.values()  # type: ignore[attr-defined]
}
app.command()(serve)


def _uvicorn_config(app_or_factory: Any, server: ServerOptions, **extra: Any) -> Any:
    import uvicorn

    from .connections import PROTOCOL_PATH, protocol_class
    from .logs import log_config

    protocol = protocol_class(server.request_read_timeout)
    return uvicorn.Config(
        app_or_factory,
        host=server.host,
        port=server.port,
        log_config=log_config(server.log_level),
        timeout_graceful_shutdown=int(server.graceful_timeout),
        access_log=False,
        # worker processes receive the config pickled: the protocol by its import path
        http=(PROTOCOL_PATH if extra.get("workers", 1) > 1 else protocol) if protocol is not None else "auto",
        limit_concurrency=server.max_connections,
        **extra,
    )


def _serve_one(path: Any, server: ServerOptions, engine: EngineOptions) -> Optional[str]:
    """Serve in this process; the load error when the model failed to load (the server then stops)."""
    import uvicorn

    from .app import create_app

    failed: list[str] = []
    uv: Optional[uvicorn.Server] = None

    def on_load_error(reason: str) -> None:
        failed.append(reason)
        if uv is not None:
            uv.should_exit = True

    web = create_app(path, server, engine, on_load_error=None if server.stay_up_on_load_error else on_load_error)
    uv = uvicorn.Server(_uvicorn_config(web, server))
    uv.run()
    return failed[0] if failed else None


def _serve_workers(path: Any, server: ServerOptions, engine: EngineOptions) -> Optional[str]:
    """Serve with ``server.workers`` processes (uvicorn's supervisor); each worker rebuilds the options
    from JSON. A worker whose model fails to load writes why and exits with uvicorn's startup-failure
    code, which stops the supervisor."""
    from uvicorn.supervisors import Multiprocess

    with tempfile.NamedTemporaryFile("r", prefix="servelm-load-error-", delete=False) as marker:
        failure_file = marker.name
    try:
        os.environ[_SPEC_ENV] = json.dumps(
            {
                "model": path if isinstance(path, str) else [spec.model_dump() for spec in path],
                "server": server.model_dump(),
                "engine": engine.model_dump(),
                "failure_file": failure_file,
            }
        )
        config = _uvicorn_config("servelm.serving.cli:app_from_env", server, factory=True, workers=server.workers)
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        with open(failure_file) as f:
            return f.read().strip() or None
    finally:
        os.unlink(failure_file)


def app_from_env() -> Any:
    """The app factory uvicorn calls in each worker, configured through the environment."""
    from .app import create_app

    spec = json.loads(os.environ[_SPEC_ENV])
    server, engine = ServerOptions.model_validate(spec["server"]), EngineOptions.model_validate(spec["engine"])

    def on_load_error(reason: str) -> None:
        with open(spec["failure_file"], "w") as f:
            f.write(reason)
        sys.stderr.flush()
        os._exit(3)  # uvicorn's STARTUP_FAILURE: the supervisor stops every worker instead of restarting this one

    return create_app(
        spec["model"], server, engine, on_load_error=None if server.stay_up_on_load_error else on_load_error
    )


@app.command()
def predict(
    model: str = typer.Option(
        ..., "-m", "--model", "--model-uri", help="Model directory or URI (runs:/, models:/, s3://... through MLflow)."
    ),
    input_path: Optional[str] = typer.Option(
        None,
        "-i",
        "--input-path",
        help="Input file: a JSON body as /invocations takes, a .jsonl file of them, or CSV (default: stdin).",
    ),
    output_path: Optional[str] = typer.Option(
        None, "-o", "--output-path", help="Where to write the predictions (default: stdout)."
    ),
    content_type: str = typer.Option("json", "-t", "--content-type", help="json or csv."),
) -> None:
    """Score a file with a model, without a server (MLflow's `mlflow models predict`)."""
    from servelm.flavors import ModelFormatError

    from .errors import APIError
    from .predict import predict_file

    try:
        predict_file(model, input_path, output_path, content_type)
    except APIError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    except (ModelFormatError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def demo(
    port: int = typer.Option(0, help="Port for the demo server (0: a free one)."),
    question: str = typer.Option("What is the capital of France?", help="What to ask the example agent and the LLM."),
    llm: bool = typer.Option(True, help="Also package and serve an LLM (needs servelm[transformers])."),
    model: Optional[str] = typer.Option(
        None,
        "--model",
        help="LLM to serve: a local checkpoint directory or .gguf file, or 'tiny' "
        "for a random tiny model (default: SmolLM2-135M-Instruct from the package index).",
    ),
) -> None:
    """Save an example agent and an LLM, serve each on loopback, and ask them through the openai client."""
    from .demo import run_demo

    run_demo(port, question, llm, model)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
