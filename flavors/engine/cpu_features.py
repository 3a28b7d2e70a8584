"""What this CPU's instruction set offers servelm's fast paths, read once, and one switch to turn them off.

Each CPU-dependent choice (the bf16 dtype on CPU, the attention kernel's bf16 instructions, the onnx engine's
cut graph, int8's VNNI range) asks ``cpu_has(feature)`` rather than reading ``/proc/cpuinfo`` itself, so that
``SERVELM_CPU_FEATURES_OFF`` turns a feature off everywhere at once, as if the CPU lacked it: a machine with
AVX-512 then runs the paths an AVX2-only machine runs (``scripts/test.sh`` runs the kernels' and engines' tests
that way; a benchmark measures what such a machine gets). The value is a comma-separated list of feature names
as ``/proc/cpuinfo`` spells them (``avx512_bf16,amx_bf16,avx512_vnni``), ``avx512`` for every AVX-512 and AMX
feature, or ``all``.

To make the libraries below servelm fall back as well, set their own switches beside it (``AVX2_SWITCHES``;
``scripts/test.sh`` does): ``ATEN_CPU_CAPABILITY=avx2`` (torch's kernels), ``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN's),
``MKL_ENABLE_INSTRUCTIONS=AVX2`` (torch's fp32 products), ``NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=+avx2`` (what
numba compiles for: given a CPU name alone, numba still passes the host's feature list, AVX-512 included, and its
kernels keep their 512-bit vectors).
"""

from __future__ import annotations

import functools
import os

OFF_VARIABLE = "SERVELM_CPU_FEATURES_OFF"

#: the environment that runs servelm and the libraries below it as on an AVX2-only CPU (benchmarks record those set)
AVX2_SWITCHES = {
    OFF_VARIABLE: "avx512,avx_vnni",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "NUMBA_CPU_NAME": "haswell",
    "NUMBA_CPU_FEATURES": "+avx2",
}

#: the features servelm's paths ask about, with what each one decides
FEATURES = {
    "avx512f": "AVX-512: the token counts the skinny linear kernel takes from MKL's fp32 product",
    "avx512_bf16": "bf16 dot products: the attention kernel's bf16 path, the onnx cut graph, bf16 as the CPU dtype",
    "amx_bf16": "bf16 matrix tiles: bf16 as the CPU dtype",
    "avx512_vnni": "int8 dot products: int8 activations over their whole range",
    "avx_vnni": "int8 dot products (AVX2 encoding): int8 activations over their whole range",
    "bf16": "Arm's bf16 instructions: bf16 as the CPU dtype",
}


def cpu_has(feature: str) -> bool:
    """Whether this CPU has ``feature`` (a ``/proc/cpuinfo`` flag name) and it is not switched off."""
    return feature in _cpu_flags() and not _switched_off(feature)


def why_not(feature: str) -> str:
    """Why ``cpu_has(feature)`` is false, for a log line or an error (or why a compiler that should use it cannot)."""
    if _switched_off(feature) and feature in _cpu_flags():
        return f"{feature} is switched off ({OFF_VARIABLE})"
    if feature not in _cpu_flags():
        return f"this CPU has no {feature}"
    return f"the compiler cannot use this CPU's {feature}"


def switched_off() -> list[str]:
    """The features ``SERVELM_CPU_FEATURES_OFF`` turns off that this CPU has (for logs and results files)."""
    return sorted(f for f in _cpu_flags() if _switched_off(f))


def describe() -> str:
    """One line for logs and benchmark results: the features servelm's paths read, each on or off."""
    flags = _cpu_flags()
    parts = [f"{name} {'on' if cpu_has(name) else 'off' if name in flags else 'absent'}" for name in FEATURES]
    return ", ".join(parts)


def _switched_off(feature: str) -> bool:
    names = {n.strip().lower() for n in os.environ.get(OFF_VARIABLE, "").split(",") if n.strip()}
    if "all" in names:
        return True
    if "avx512" in names and (feature.startswith("avx512") or feature.startswith("amx")):
        return True
    return feature in names


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """The flags of the first CPU in /proc/cpuinfo (x86's ``flags``, Arm's ``Features``); empty where unreadable."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()
