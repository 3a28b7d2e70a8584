"""``servelm predict``: score a file with a model, without a server (MLflow's ``mlflow models predict``).

The input is what /invocations takes: a JSON body (``dataframe_split``, ``dataframe_records``,
``instances``, ``inputs``, an agent's request...), one such body per line of a ``.jsonl`` file, or CSV.
The output is what /invocations answers: ``{"predictions": ...}`` (agents' answers as they are), one line
each for ``.jsonl`` input.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Optional, TextIO

from .routes.invocations import json_default
from .scoring_input import Invocation, parse_csv, parse_invocation


def _score(model: Any, invocation: Invocation) -> Any:
    result = model.predict(invocation.data, invocation.params)
    return result if invocation.raw else {"predictions": result}


def predict_file(
    model_uri: str, input_path: Optional[str], output_path: Optional[str], content_type: str = "json"
) -> None:
    """Load the model at ``model_uri`` (a directory or any URI MLflow resolves), score the input file
    (stdin when None) and write the answer to ``output_path`` (stdout when None)."""
    from servelm.flavors.pyfunc import load_model

    if content_type not in ("json", "csv"):
        raise ValueError(f"--content-type must be json or csv, got {content_type!r}")
    model = load_model(model_uri)
    schema = model.metadata.signature.inputs if model.metadata.signature is not None else None
    raw = sys.stdin.buffer.read() if input_path is None else open(input_path, "rb").read()
    outputs: list[Any]
    if content_type == "csv":
        outputs = [_score(model, parse_csv(raw, schema))]
        lines = False
    else:
        lines = bool(input_path and input_path.endswith(".jsonl"))
        bodies = (
            [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
            if lines
            else [json.loads(raw)]
        )
        outputs = [_score(model, parse_invocation(body, schema)) for body in bodies]
    out: TextIO = sys.stdout if output_path is None else open(output_path, "w")
    try:
        if lines:
            for item in outputs:
                out.write(json.dumps(item, default=json_default) + "\n")
        else:
            out.write(json.dumps(outputs[0], default=json_default) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
