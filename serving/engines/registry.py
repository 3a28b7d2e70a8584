"""Every engine servelm can serve a model with, in one table: its name, the function that builds its
``ModelService``, whether it generates tokens, the engine options it reads and whether it takes a GPU where
there is one. A new engine is its module and one line here; the options' help, the option checks, Ray's
concurrency and the ``--workers`` check all read this table.

The builders are named by import path and imported when a model is served, so reading the table imports no
engine (and no torch)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_LLM_OPTIONS = ("max_num_seqs", "max_request_sequences", "tool_call_parser")


@dataclass(frozen=True)
class EngineEntry:
    """One engine. ``build`` is ``"module:function"``, a function of (model path, ServerOptions, EngineOptions,
    ServerMetrics) returning the model's ``ModelService``. ``generates``: an LLM engine, whose concurrency is its
    batch (``max_num_seqs``). ``options``: the engine options it reads (the others must stay at their defaults).
    ``gpu``: it runs on a GPU where there is one unless ``--device`` says otherwise (one engine per device)."""

    name: str
    build: str
    generates: bool
    options: tuple[str, ...]
    gpu: bool

    def builder(self) -> Callable[..., Any]:
        module, function = self.build.split(":")
        return getattr(importlib.import_module(module), function)


_BUILD = "servelm.serving.services.build"
REGISTRY: tuple[EngineEntry, ...] = (
    EngineEntry("pyfunc", f"{_BUILD}:pyfunc_service", False, (), False),
    EngineEntry(
        "transformers",
        f"{_BUILD}:transformers_service",
        True,
        (
            *_LLM_OPTIONS,
            *("device", "threads", "engine_process", "quantization", "dtype", "kv_cache_memory"),
            "gpu_memory_utilization",
        ),
        True,
    ),
    EngineEntry(
        "onnx",
        f"{_BUILD}:onnx_service",
        True,
        (*_LLM_OPTIONS, "device", "threads", "engine_process", "kv_cache_dtype", "kv_cache_memory"),
        False,  # on the execution provider its export was made for unless --device names one
    ),
    EngineEntry(
        "vllm",
        f"{_BUILD}:vllm_service",
        True,
        (
            *_LLM_OPTIONS,
            "device",
            "dtype",
            "max_model_len",
            "gpu_memory_utilization",
            "tensor_parallel_size",
            "enforce_eager",
        ),
        True,
    ),
    EngineEntry("llamacpp", f"{_BUILD}:llamacpp_service", True, (*_LLM_OPTIONS, "threads", "max_model_len"), False),
)

ENGINES: tuple[str, ...] = tuple(entry.name for entry in REGISTRY)


def engine_entry(name: str) -> EngineEntry:
    """The registry's entry for ``name`` (KeyError naming the engines for an unknown one)."""
    for entry in REGISTRY:
        if entry.name == name:
            return entry
    raise KeyError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")


def engines_reading(option: str) -> tuple[str, ...]:
    """The engines that read engine option ``option``."""
    return tuple(entry.name for entry in REGISTRY if option in entry.options)


def engine_only_options() -> dict[str, tuple[str, ...]]:
    """Each engine option some engines read and others do not, with the engines that read it."""
    names = dict.fromkeys(option for entry in REGISTRY for option in entry.options)
    return {name: engines_reading(name) for name in names if len(engines_reading(name)) < len(REGISTRY)}
