"""The differential suite: every corpus case saved, loaded and called through MLflow and through servelm; the
outcomes must be equal (or both errors), case by case, unless the case names a deliberate difference.

The table of every call is printed (``pytest -s tests/mlflow_parity``) and written to
``$SERVELM_PARITY_TABLE`` when set. A new parity bug is one more ``Case`` in corpus.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("mlflow", reason="mlflow not installed")
pytest.importorskip("pandas")

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # corpus.py imports harness by name
harness = importlib.import_module("harness")
corpus = importlib.import_module("corpus")
sys.path.remove(str(HERE))

ROWS: list[tuple[str, str, str, str, str]] = []  # case, call, verdict, mlflow, servelm


@pytest.fixture(autouse=True)
def _mlflow_in_tmp(tmp_path, monkeypatch):
    """MLflow's tracking store in the test's directory, not the working directory."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    harness.quiet()


@pytest.mark.parametrize("case", corpus.CASES, ids=lambda c: c.name)
def test_same_answer(case, tmp_path):
    mlflow_outcome = harness.run(case, "mlflow", tmp_path)
    servelm_outcome = harness.run(case, "servelm", tmp_path)
    rows = [("save", mlflow_outcome.save, servelm_outcome.save)]
    rows += [(str(call), a, b) for call, a, b in zip(case.calls, mlflow_outcome.calls, servelm_outcome.calls)]
    differences = []
    for call, a, b in rows:
        equal = harness.same(a, b) if call != "save" else (a == "saved") == (b == "saved")
        verdict = "equal" if equal else ("deliberate" if case.deliberate else "DIFFERENT")
        ROWS.append((case.name, call, verdict, _short(a), _short(b)))
        if not equal:
            differences.append(f"{call}\n    mlflow:  {_short(a, 600)}\n    servelm: {_short(b, 600)}")
    if differences and not case.deliberate:
        pytest.fail(f"{case.name}: servelm answers differently from MLflow:\n" + "\n".join(differences))
    if case.deliberate and not differences:
        pytest.fail(f"{case.name} is marked deliberate ({case.deliberate}) but the answers are now equal")


def _short(value, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def teardown_module() -> None:
    """Print (and write, with $SERVELM_PARITY_TABLE) the table of every call."""
    if not ROWS:
        return
    cases = {r[0] for r in ROWS}
    counts = {v: sum(1 for r in ROWS if r[2] == v) for v in ("equal", "deliberate", "DIFFERENT")}
    lines = [
        f"MLflow parity: {len(cases)} cases, {len(ROWS)} calls: {counts['equal']} equal, "
        f"{counts['deliberate']} deliberate differences, {counts['DIFFERENT']} different",
        "",
        "| case | call | verdict | mlflow | servelm |",
        "|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in row) + " |" for row in ROWS]
    table = "\n".join(lines)
    print("\n" + table)
    if os.environ.get("SERVELM_PARITY_TABLE"):
        Path(os.environ["SERVELM_PARITY_TABLE"]).write_text(table + "\n")
