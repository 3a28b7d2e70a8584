"""Run one model, saved and called the same way, through MLflow and through servelm, and compare.

A corpus case is MLflow code (a model, the keywords of ``save_model``, then calls): it runs as written with
``mlflow`` and once more with its imports swapped for servelm's (``swapped``). Each call's outcome is
reduced to something comparable: a Python ``predict`` gives its output's type and JSON value, or "raises";
an ``/invocations`` request gives its status code and, on 200, its JSON body. MLflow's side of HTTP is
MLflow's own scoring app (``mlflow.pyfunc.scoring_server.init``, what ``mlflow models serve`` runs under
uvicorn); servelm's is ``create_app`` (what ``servelm serve`` runs); both are driven in process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import textwrap
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

#: what "swap the imports" means: the same code with servelm's modules in MLflow's place
SWAPS = [
    ("from mlflow.models import", "from servelm.flavors import"),
    ("from mlflow.pyfunc import", "from servelm.flavors.pyfunc import"),
    ("from mlflow.types.schema import", "from servelm.flavors import"),
    ("from mlflow.types.agent import", "from servelm.agents import"),
    ("from mlflow.types.llm import", "from servelm.agents import"),
    ("from mlflow.types.responses import", "from servelm.agents import"),
    ("from mlflow.models.signature import", "from servelm.flavors import"),
    ("mlflow.pyfunc.", "servelm.flavors.pyfunc."),
    ("mlflow.models.", "servelm.flavors."),
    ("import mlflow\n", "import servelm.flavors\nimport servelm.flavors.pyfunc\n"),
]


def swapped(source: str) -> str:
    """MLflow code with servelm's imports in place of mlflow's."""
    for old, new in SWAPS:
        source = source.replace(old, new)
    assert "mlflow" not in source, source
    return source


#: prepended to every case's model code: a model's view of what it was given, as plain JSON
DESCRIBE = """
def describe(x):
    import numpy as np
    import pandas as pd

    if isinstance(x, pd.DataFrame):
        return {"DataFrame": {str(c): [str(x[c].dtype), x[c].tolist()] for c in x.columns}}
    if isinstance(x, pd.Series):
        return {"Series": [str(x.dtype), x.tolist()]}
    if isinstance(x, np.ndarray):
        return {"ndarray": [str(x.dtype), list(x.shape), x.tolist()]}
    if isinstance(x, dict):
        return {"dict": {str(k): describe(v) for k, v in x.items()}}
    if isinstance(x, (list, tuple)):
        return {type(x).__name__: [describe(v) for v in x]}
    if hasattr(x, "model_dump"):
        return {type(x).__name__: x.model_dump(exclude_none=True)}
    return {type(x).__name__: x if isinstance(x, (int, float, str, bool, type(None))) else repr(x)}
"""


@dataclass
class Call:
    """One call of a saved model: Python ``predict`` (``value`` and ``params`` are Python expressions) or
    an /invocations request (``value`` is the body: a JSON-able object, or text for CSV)."""

    how: str  # "predict" | "http" | "csv" | "signature" (the saved MLmodel's) | "serving_example" (POST its own)
    value: Any
    params: Optional[str] = None

    def __str__(self) -> str:
        if self.how == "predict":
            return f"predict({self.value}" + (f", params={self.params})" if self.params else ")")
        if self.how == "signature":
            return "the saved signature"
        if self.how == "serving_example":
            return "POST serving_input_example.json"
        if self.how == "csv":
            return "POST text/csv " + json.dumps(self.value)
        return "POST " + json.dumps(self.value)


def predict(value: str, params: Optional[str] = None) -> Call:
    return Call("predict", value, params)


def http(body: Any) -> Call:
    return Call("http", body)


def csv(text: str) -> Call:
    return Call("csv", text)


def saved_signature() -> Call:
    return Call("signature", None)


def serving_example() -> Call:
    """POST the model's own serving_input_example.json to its /invocations."""
    return Call("serving_example", None)


@dataclass
class Case:
    """A model (code defining ``model``, with mlflow's imports), how it is saved (``save_model``'s keyword
    arguments, as code) and the calls made on it. ``deliberate`` says why servelm answers differently on
    purpose (the README's "Coming from MLflow" lists these); empty means the answers must match."""

    name: str
    model: str
    calls: list[Call]
    save: str = ""
    deliberate: str = ""
    setup: str = ""  # code run before the model code (imports, helper classes)


@dataclass
class Outcome:
    """What one system did with one case: whether the save succeeded, then one result per call."""

    save: str
    calls: list[Any] = field(default_factory=list)


def plain(value: Any) -> Any:
    """A prediction as JSON, as servelm's /invocations writes it (numpy, pandas, datetimes)."""
    from servelm.serving.routes.invocations import json_default

    return json.loads(json.dumps(value, default=json_default))


def summary(value: Any) -> Any:
    """A Python prediction, comparable: its type and its value as JSON."""
    return {type(value).__name__: plain(value)}


def run(case: Case, system: str, root: Path) -> Outcome:
    """Save, load and call ``case``'s model with ``system`` ("mlflow" or "servelm")."""
    import numpy as np
    import pandas as pd

    code = textwrap.dedent(case.setup) + DESCRIBE + textwrap.dedent(case.model)
    save_kwargs = f"dict({case.save})"
    if system == "servelm":
        code, save_kwargs = swapped(code), swapped(save_kwargs)
        imports = "import servelm.flavors\nimport servelm.flavors.pyfunc\n"
    else:
        imports = "import mlflow\n"
    scope: dict[str, Any] = {"pd": pd, "np": np, "__name__": f"parity_{system}_{case.name}"}
    exec(compile(imports + code, f"<{case.name} ({system})>", "exec", dont_inherit=True), scope)
    path = root / system / case.name
    pyfunc = eval("servelm.flavors.pyfunc" if system == "servelm" else "mlflow.pyfunc", scope)
    model_class = eval("servelm.flavors.Model" if system == "servelm" else "mlflow.models.Model", scope)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pyfunc.save_model(str(path), python_model=scope["model"], **eval(save_kwargs, scope))
        except Exception as exc:
            return Outcome(f"raises {type(exc).__name__}: {_first_line(exc)}")
        model = pyfunc.load_model(str(path))
        outcome = Outcome("saved")
        client = None
        for call in case.calls:
            if call.how == "signature":
                signature = model_class.load(str(path)).signature
                outcome.calls.append(signature.to_dict() if signature is not None else None)
                continue
            if call.how == "predict":
                try:
                    params = eval(call.params, scope) if call.params else None
                    value = eval(call.value, scope)
                    result = model.predict(value, params=params) if params is not None else model.predict(value)
                    outcome.calls.append(summary(result))
                except Exception as exc:
                    outcome.calls.append(f"raises {type(exc).__name__}: {_first_line(exc)}")
                continue
            if client is None:
                client = _client(system, model, str(path))
            if call.how == "serving_example":
                body = (path / "serving_input_example.json").read_text()
                reply = client.post("/invocations", content=body, headers={"content-type": "application/json"})
            elif call.how == "csv":
                reply = client.post("/invocations", content=call.value, headers={"content-type": "text/csv"})
            else:
                reply = client.post(
                    "/invocations", content=json.dumps(call.value), headers={"content-type": "application/json"}
                )  # noqa: E501
            if reply.status_code != 200:
                outcome.calls.append(reply.status_code)
            elif reply.headers.get("content-type", "").startswith("text/event-stream"):
                outcome.calls.append("stream: " + " ".join(line for line in reply.text.splitlines() if line))
            else:
                outcome.calls.append(reply.json())
        if client is not None:
            client.__exit__(None, None, None)
    return outcome


def _client(system: str, model: Any, path: str) -> Any:
    from starlette.testclient import TestClient

    if system == "mlflow":
        from mlflow.pyfunc import scoring_server

        app = scoring_server.init(model)
    else:
        from servelm.serving import create_app

        app = create_app(path)
    client = TestClient(app, raise_server_exceptions=False)
    client.__enter__()
    if system == "servelm":  # the model loads after startup: wait for /health's 200 (or its error)
        while client.get("/health").json().get("status") not in ("ok", "error"):
            time.sleep(0.01)
    return client


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else ""


def same(a: Any, b: Any) -> bool:
    """Equal outcomes: both raise (any message), the same status code, or equal values (floats to 1e-6)."""
    if isinstance(a, str) and isinstance(b, str) and a.startswith("raises") and b.startswith("raises"):
        return True
    if isinstance(a, float) and isinstance(b, float):
        return (a != a and b != b) or abs(a - b) <= 1e-6 * max(1.0, abs(a))  # NaN equals NaN here
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """MLflow's and servelm's load-time warnings off the test output, for the block only (later tests read
    servelm's warnings with caplog)."""
    loggers = [logging.getLogger(name) for name in ("mlflow", "servelm")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
