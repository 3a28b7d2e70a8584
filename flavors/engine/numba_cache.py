"""Compiling servelm's numba kernels so that every process on a machine runs the same machine code: the code numba's
disk cache holds.

Why: a kernel numba has just compiled in a process and the same kernel loaded from numba's cache by a later process
do not compute the same bits (measured on the attention kernel, fp32 and bf16 alike: outputs apart in the last
place). On bf16 that turned 4 of the 8 greedy fidelity answers of SmolLM2 between a server's first start on a
machine, which compiles, and every start after it, which loads. Loading the cache in the compiling process does not
help (numba resolves to the code it already holds). So where the cache lacks a kernel, a child process compiles it
into the cache, and this process loads it from there like every later one. Where nothing can be written (a
read-only install and home), each process compiles its own, as numba does.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger("servelm.engine")

#: set in the child that fills the cache: it compiles in its own process
CHILD_VARIABLE = "SERVELM_NUMBA_CACHE_CHILD"
CHILD_TIMEOUT_S = 300.0


def compiled_from_cache(
    function: Callable[..., Any], warm_up: tuple[Any, ...], factory: tuple[str, str, list[Any]], **options: Any
) -> Any:
    """``function`` compiled by numba's ``njit`` with ``options`` and called once with ``warm_up`` (the types callers
    pass), its code loaded from numba's disk cache. ``factory`` (module, function name, JSON arguments) is what builds
    and compiles the same kernel, for the child process that fills the cache."""
    from numba import njit

    try:
        dispatcher = njit(function, cache=True, **options)
    except RuntimeError:  # nowhere writable for numba's cache: compile each start
        dispatcher = njit(function, cache=False, **options)
    else:
        if not os.environ.get(CHILD_VARIABLE) and not _in_cache(dispatcher, warm_up):
            _fill_cache(factory)
    dispatcher(*warm_up)
    return dispatcher


def _in_cache(dispatcher: Any, warm_up: tuple[Any, ...]) -> bool:
    """Whether numba's cache holds ``dispatcher`` for the types of ``warm_up`` (true where it cannot tell)."""
    try:
        from numba import typeof

        signature = tuple(typeof(value) for value in warm_up)
        return dispatcher._cache.load_overload(signature, dispatcher.targetctx) is not None
    except Exception:  # numba's internals moved: compile here, as numba would
        return True


def _fill_cache(factory: tuple[str, str, list[Any]]) -> None:
    """Run ``factory`` in a child process, whose compile writes numba's cache (the child inherits the environment
    that decides what numba compiles for)."""
    module, name, arguments = factory
    code = (
        "import importlib, json, sys; "
        "getattr(importlib.import_module(sys.argv[1]), sys.argv[2])(*json.loads(sys.argv[3]))"
    )
    command = [sys.executable, "-c", code, module, name, json.dumps(arguments)]
    try:
        done = subprocess.run(
            command, env={**os.environ, CHILD_VARIABLE: "1"}, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("compiling %s.%s in a child process failed (%s): compiled here", module, name, exc)
        return
    if done.returncode:
        log.warning("compiling %s.%s in a child process failed: %s", module, name, done.stderr.strip()[-500:])
