"""What ``servelm serve`` serves: models from ``-m`` flags (``-m DIR`` or ``-m NAME=DIR``, repeated), or from a
YAML file (``--config``) naming each model with its own engine options and limits:

    port: 8000                     # any server option (ServerOptions)
    models:
      - model: ./agent             # a model directory, .gguf file or model URI
        name: agent                # default: the directory name
      - model: ./smollm2
        name: smollm2
        engine: transformers       # any engine option (EngineOptions), for this model
        max_num_seqs: 32
        max_concurrency: 16        # this model's own limits (default: the server's)
        max_queue: 64

Relative paths in a file are read from the file's folder.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import ValidationError

from .options import EngineOptions, ModelSpec, ServerOptions, split_options


def specs_from_flags(models: list[str], engine: EngineOptions) -> list[ModelSpec]:
    """The ``-m`` values as model specs (every model gets the engine flags)."""
    return [ModelSpec(model=path, name=name, engine=engine) for name, path in map(split_named, models)]


def split_named(value: str) -> tuple[Any, str]:
    """``NAME=PATH`` as (NAME, PATH); a plain path (one that exists, or has no ``=``) as (None, PATH)."""
    name, sep, path = value.partition("=")
    if not sep or os.path.exists(value) or "/" in name or not name:
        return None, value
    return name, path


def read_serve_config(
    path: str, flags: dict[str, Any], extra_models: list[str]
) -> tuple[ServerOptions, list[ModelSpec]]:
    """The server options and models a YAML file names. ``flags``: the command line's option values; those that
    differ from their defaults override the file (server options), or apply to every model (engine options).
    ``extra_models``: ``-m`` values given beside the file, served after its models."""
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with `models:` and server options")
    folder = os.path.dirname(os.path.abspath(path))
    entries = data.pop("models", None) or []
    if not isinstance(entries, list):
        raise ValueError(f"{path}: `models` must be a list of {{model: DIR, name: NAME, ...}}")
    set_on_command_line = {
        k: v for k, v in flags.items() if k in ServerOptions.model_fields and v != ServerOptions.model_fields[k].default
    }
    engine_flags = {
        k: v for k, v in flags.items() if k in EngineOptions.model_fields and v != EngineOptions.model_fields[k].default
    }
    try:
        server, _ = split_options(**{**data, **set_on_command_line})
    except TypeError as exc:
        raise ValueError(f"{path}: {exc}") from None
    specs = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or "model" not in entry:
            raise ValueError(f"{path}: models[{i}] needs `model: DIR`")
        entry = dict(entry)
        model = str(entry.pop("model"))
        if "://" not in model and not os.path.isabs(model):
            model = os.path.join(folder, model)
        own = {k: entry.pop(k) for k in ("name", "max_concurrency", "max_queue") if k in entry}
        unknown = sorted(set(entry) - set(EngineOptions.model_fields))
        if unknown:
            raise ValueError(
                f"{path}: models[{i}]: unknown option(s) {unknown}; a model takes name, max_concurrency, max_queue and "
                f"the engine options {sorted(EngineOptions.model_fields)}"
            )
        try:
            specs.append(ModelSpec(model=model, engine=EngineOptions(**{**engine_flags, **entry}), **own))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"{path}: models[{i}].{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    specs += specs_from_flags(extra_models, EngineOptions(**engine_flags))
    if not specs:
        raise ValueError(f"{path}: names no model (models: [{{model: DIR}}])")
    return server, specs
