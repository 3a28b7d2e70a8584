"""How the benchmarks give their result: one JSON object, with where and how it was measured (``provenance``)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from typing import Any, Optional


def emit(report: dict[str, Any], out: Optional[str]) -> None:
    """Print ``report`` (with its ``provenance`` added) as indented JSON, and write the same to ``out`` where one
    is given."""
    report.setdefault("provenance", provenance())
    print(json.dumps(report, indent=2))
    if out:
        with open(out, "w") as f:
            json.dump(report, f, indent=2)


def provenance() -> dict[str, Any]:
    """The commit, the command, the date and the machine a result was measured on: the CPU's model, its flags
    that servelm's paths read, and which of those were switched off (``SERVELM_CPU_FEATURES_OFF``, with the
    libraries' own switches that are set: ``cpu_features.AVX2_SWITCHES``)."""
    from servelm.flavors.engine import cpu_features

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    switches = getattr(cpu_features, "AVX2_SWITCHES", {})  # none in an older servelm (a baseline's venv)
    return {
        "commit": commit or "unknown",
        "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "cpu": cpu_model(),
        "cpu_features": cpu_features.describe(),
        "switches": {name: os.environ[name] for name in switches if name in os.environ},
    }


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
