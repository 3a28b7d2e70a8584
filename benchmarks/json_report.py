"""How the one-shot benchmarks (fidelity, onnx_step, roofline, runner_step) give their result: one JSON object."""

from __future__ import annotations

import json
from typing import Any, Optional


def emit(report: dict[str, Any], out: Optional[str]) -> None:
    """Print ``report`` as indented JSON, and write the same to ``out`` where one is given."""
    print(json.dumps(report, indent=2))
    if out:
        with open(out, "w") as f:
            json.dump(report, f, indent=2)
