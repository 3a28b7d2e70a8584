"""Typed options: one model per concern (``ServerOptions``, ``EngineOptions``), the only place their
defaults live. ``servelm serve`` builds its flags from these fields (names, types, defaults and help),
workers receive them as JSON and validate them again, and ``create_app`` and the Ray deployment take
them as objects or as keyword arguments of the same names.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Literal, Optional, Union, get_args, get_origin

from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError

LogLevel = Literal["debug", "info", "warning", "error"]
EngineName = Literal["auto", "pyfunc", "transformers", "onnx", "vllm", "llamacpp"]  # auto, and engines/registry.py
ToolParserName = Literal["hermes", "llama3_json", "mistral"]
QuantizationName = Literal["int8"]
KvCacheDtypeName = Literal["auto", "bfloat16", "float32"]


class ServerOptions(BaseModel):
    """How one server listens, names its model, authenticates, limits and logs. Times in seconds, sizes in bytes."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    host: str = Field("127.0.0.1", description="Address to bind (loopback by default).")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on.")
    workers: int = Field(1, ge=1, description="Server processes (each loads the model and its engine).")
    served_model_name: Optional[str] = Field(None, description="Model name clients use (default: the directory name).")
    api_key: Optional[str] = Field(
        default_factory=lambda: os.environ.get("SERVELM_API_KEY") or None,
        description="Require 'Authorization: Bearer KEY' (default: env SERVELM_API_KEY).",
    )
    max_concurrency: int = Field(64, ge=1, description="Requests running at once.")
    max_queue: int = Field(256, ge=0, description="Requests waiting for a slot before 429.")
    timeout: float = Field(600.0, gt=0, description="Seconds a request may take before 504.")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1, description="Largest request body accepted (413 past it).")
    max_threads: int = Field(32, ge=1, description="Threads running synchronous agent code.")
    graceful_timeout: float = Field(30.0, ge=0, description="Seconds to finish in-flight requests on SIGTERM.")
    request_read_timeout: float = Field(
        30.0, gt=0, description="Seconds a client has to send a whole request (headers and body); 408 past it."
    )
    max_connections: int = Field(
        1024, ge=1, description="Open connections (and requests) the server keeps; 503 past it."
    )
    docs: bool = Field(False, description="Serve the interactive API docs at /docs (/openapi.json is always served).")
    expose_errors: bool = Field(
        False,
        description="Put an unexpected exception's text in its 500 body (default: its type and the request id; "
        "the text and traceback go to the log).",
    )
    stream_stall_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds a stream may wait for its client to read before it is dropped and its engine row freed.",
    )
    log_level: LogLevel = Field("info", description="Log level: debug, info, warning, error.")
    stay_up_on_load_error: bool = Field(
        False,
        description="When the model fails to load, keep serving /health (503 with the reason) "
        "instead of exiting; for orchestrators that read the reason there.",
    )


class EngineOptions(BaseModel):
    """Which engine serves the model and how it runs."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    engine: Optional[EngineName] = Field(
        None,
        description="Force an engine: pyfunc, transformers, onnx, vllm, llamacpp (default, or auto: from the model; "
        "a GGUF file runs on llamacpp where llama.cpp is installed, a transformers model on vllm where vLLM is "
        "installed and a CUDA device is there).",
    )
    max_num_seqs: int = Field(64, ge=1, description="LLM engines: sequences decoded together in one batch.")
    max_request_sequences: int = Field(
        256,
        ge=1,
        description="LLM engines: sequences one request may start (prompts x n on /v1/completions, "
        "chat bodies x n on /invocations); past it a 400 before any work.",
    )
    device: Optional[str] = Field(
        None,
        description="LLM engines: cpu or cuda[:N] (default: cuda when available); "
        "for onnx the execution provider (cpu, cuda, dml, ...).",
    )
    threads: Optional[int] = Field(
        None,
        ge=1,
        description="LLM engines on CPU: torch or onnxruntime threads (default: every core for models "
        "with 64 MiB of weights or more, half the cores for smaller ones).",
    )
    dtype: Optional[str] = Field(
        None, description="transformers / vllm engines: weight dtype (auto, float32, bfloat16, float16)."
    )
    quantization: Optional[QuantizationName] = Field(
        None,
        description="transformers engine on CPU: int8 runs the linear layers but the MLP's down projections in "
        "int8 (weights per channel, activations per step; faster, answers differ more from the unquantized "
        "model's than bf16's).",
    )
    kv_cache_dtype: Optional[KvCacheDtypeName] = Field(
        None,
        description="onnx engine on CPU: bfloat16 runs the export cut at its attention nodes with servelm's "
        "attention over a bf16 cache (needs avx512_bf16); float32 runs the whole graph, its own attention over a "
        "cache in the export's dtype; auto (default) the first where the CPU has it.",
    )
    kv_cache_memory: Optional[ByteSize] = Field(
        None,
        description="transformers and onnx engines: memory for the KV cache, e.g. 4GiB (default: on a CPU 40% of "
        "the machine's memory, committed only as it is written). A prompt that could never fit is refused (400); "
        "when decoding fills it, the newest sequences wait and are computed again once there is room.",
    )
    tool_call_parser: Optional[ToolParserName] = Field(
        None,
        description="LLM engines: the syntax the model writes tool calls in "
        "(hermes, llama3_json, mistral; default: read from its chat template).",
    )
    engine_process: bool = Field(
        True,
        description="transformers engine: run the model in an engine process of its own "
        "(off: on a thread of the server process).",
    )
    max_model_len: Optional[int] = Field(
        None,
        ge=1,
        description="vllm and llamacpp engines: context length to serve (vllm's default: the model's; llamacpp's: "
        "16384 tokens of KV cache its slots share, or the model's context if less).",
    )
    gpu_memory_utilization: Optional[float] = Field(
        None,
        gt=0,
        le=1,
        description="vllm and transformers engines on a GPU: share of its memory the engine may take (weights, "
        "activations and the KV cache; default 0.9).",
    )
    tensor_parallel_size: Optional[int] = Field(None, ge=1, description="vllm engine: GPUs to shard the model over.")
    enforce_eager: bool = Field(
        False, description="vllm engine: skip graph capture / compilation (faster start, slower steps)."
    )


class ModelSpec(BaseModel):
    """One model of a server that serves several: where it is, the name requests use, its engine, and its own
    limits (default: the server's ``max_concurrency`` and ``max_queue``)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="Model directory, .gguf file or model URI.")
    name: Optional[str] = Field(None, description="Name requests use (default: the directory name).")
    engine: EngineOptions = Field(default_factory=EngineOptions, description="How its engine runs.")
    max_concurrency: Optional[int] = Field(None, ge=1, description="Its requests running at once.")
    max_queue: Optional[int] = Field(None, ge=0, description="Its requests waiting for a slot before 429.")


def split_options(
    server_options: Optional[ServerOptions] = None, engine_options: Optional[EngineOptions] = None, **fields: Any
) -> tuple[ServerOptions, EngineOptions]:
    """(ServerOptions, EngineOptions) from objects and/or flat keyword fields of either (fields win).

    An unknown name is a TypeError listing the known ones; a bad value a ValueError naming the field.
    """
    known_server, known_engine = set(ServerOptions.model_fields), set(EngineOptions.model_fields)
    unknown = sorted(set(fields) - known_server - known_engine)
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}; known: {sorted(known_server | known_engine)}")
    try:
        server = (server_options or ServerOptions()).model_copy(
            update={k: v for k, v in fields.items() if k in known_server}
        )
        engine = (engine_options or EngineOptions()).model_copy(
            update={k: v for k, v in fields.items() if k in known_engine}
        )
        return ServerOptions.model_validate(server.model_dump()), EngineOptions.model_validate(engine.model_dump())
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"option {'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None


def cli_parameters(*models: type[BaseModel]) -> list[inspect.Parameter]:
    """typer parameters for every field of ``models``: ``--field-name`` flags with the field's type,
    default and description (booleans as ``--name/--no-name``)."""
    import typer

    parameters = []
    for model in models:
        for name, info in model.model_fields.items():
            flag = "--" + name.replace("_", "-")
            annotation = _cli_type(info.annotation)
            decls = [f"{flag}/--no-{flag[2:]}"] if annotation is bool else [flag]
            default = None if info.default_factory is not None else info.default
            option = typer.Option(default, *decls, help=info.description, show_default=default is not None)
            parameters.append(
                inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
            )
    return parameters


def _literal_choices(annotation: Any) -> list[str]:
    for candidate in (annotation, *get_args(annotation)):
        if get_origin(candidate) is Literal:
            return [str(a) for a in get_args(candidate)]
    return []


def _cli_type(annotation: Any) -> Any:
    """The plain type typer parses for a field (Optional[X] -> Optional[X]; Literal and ByteSize -> str: pydantic
    reads them)."""
    if _literal_choices(annotation):
        return Optional[str]
    if get_origin(annotation) is Union:
        inner = [a for a in get_args(annotation) if a is not type(None)]
        if inner == [ByteSize]:
            return Optional[str]
        return Optional[inner[0]] if len(inner) == 1 else annotation
    return annotation
