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
    """MLflow's tracking store in the test's directory, not the working directory; their load-time warnings off."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    with harness.quiet():
        yield


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


def test_mlflow_models_serve_is_what_the_suite_compares_with(tmp_path, free_port, wait_until):
    """The suite drives MLflow's scoring app in process; here the real ``mlflow models serve`` (uvicorn, its
    own process) answers one case's requests exactly as that app does."""
    import subprocess

    import httpx

    case = next(c for c in corpus.CASES if c.name == "add_n_dataframe_model")
    in_process = harness.run(case, "mlflow", tmp_path)
    model_dir = tmp_path / "mlflow" / case.name
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            str(model_dir),
            "--env-manager",
            "local",
            "-p",
            str(free_port),
            "-h",
            "127.0.0.1",
        ],  # fmt: skip
        stdout=log,
        stderr=subprocess.STDOUT,
        # MLflow execs `uvicorn` by name: this venv's bin first on the PATH
        env={**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")},
    )
    base = f"http://127.0.0.1:{free_port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/ping").status_code == 200
        except httpx.TransportError:
            return proc.poll() is not None  # it died: stop waiting (the assertion below says so)

    try:
        assert wait_until(ready, timeout=300) and proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
        for call, expected in zip(case.calls, in_process.calls):
            if call.how == "http":
                reply = httpx.post(f"{base}/invocations", json=call.value, timeout=120)
            elif call.how == "csv":
                reply = httpx.post(
                    f"{base}/invocations", content=call.value, headers={"content-type": "text/csv"}, timeout=120
                )
            else:
                continue
            got = reply.json() if reply.status_code == 200 else reply.status_code
            assert harness.same(got, expected), (str(call), got, expected)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
