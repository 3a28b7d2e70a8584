"""The benchmark scripts run end to end against real local servers (a few requests; no timing asserts)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import running_server

PYTHON = os.path.abspath(sys.executable)  # the scripts run in benchmarks/: a relative interpreter path would break
BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
pytest.importorskip("aiohttp")


def run_script(*args, timeout=240):
    proc = subprocess.run([PYTHON, *args], capture_output=True, text=True, timeout=timeout, cwd=BENCH)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_serve_py_against_an_agent_server(tmp_path, chat_agent_code):
    from servelm.flavors.pyfunc import save_model

    save_model(str(tmp_path / "agent"), python_model=chat_agent_code)
    out = tmp_path / "rows.jsonl"
    with running_server(str(tmp_path / "agent")) as (base, _):
        run_script("serve.py", "--url", base, "--concurrency", "1,2", "--requests", "4", "--label", "agent", "--out", str(out))
        run_script("serve.py", "--url", base, "--path", "/invocations", "--concurrency", "2", "--requests", "4", "--stream", "--out", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["concurrency"] for r in rows] == [1, 2, 2] and all(r["failures"] == 0 for r in rows)
    assert rows[2]["ttft_p50_s"] is not None and rows[0]["system"] == "agent"


def test_serve_py_streams_an_llm(tmp_path, tiny_llama):
    from servelm.flavors.transformers import save_model

    save_model(tiny_llama, str(tmp_path / "llm"))
    with running_server(str(tmp_path / "llm")) as (base, _):
        out = run_script("serve.py", "--url", base, "--concurrency", "3", "--requests", "6", "--max-tokens", "5", "--stream", "--ignore-eos")
    row = json.loads(out.strip().splitlines()[-1])
    assert row["failures"] == 0 and row["output_tokens"] == 30 and row["itl_p50_s"] is not None and row["tpot_p50_s"] is not None


def test_compare_py_runs_systems_and_writes_results(tmp_path, tiny_llama):
    systems = "servelm-transformers,servelm-agent" + (",servelm-onnx" if _has("onnxruntime_genai") else "")
    run_script("compare.py", "--systems", systems + ",vllm", "--concurrency", "1,2", "--requests", "4", "--agent-requests", "16", "--agent-seconds", "1", "--max-tokens", "4",
               "--out-dir", str(tmp_path), "--name", "t", "--vllm-python", PYTHON, timeout=600)
    report = json.loads((tmp_path / "t.json").read_text())
    names = {r["system"] for r in report["rows"]}
    assert {"servelm-transformers", "servelm-agent"} <= names and all(r["failures"] == 0 for r in report["rows"])
    if not _has("vllm"):
        assert "vllm" in report["skipped"]
    table = (tmp_path / "t.md").read_text()
    assert "| servelm-transformers | 2 |" in table and "## Targets" in table
    if _has("matplotlib"):
        assert (tmp_path / "t-throughput.png").stat().st_size > 0 and (tmp_path / "t-ttft.png").stat().st_size > 0


def test_hot_path_quick(tmp_path):
    run_script("hot_path.py", "--quick", "--out", str(tmp_path / "hot.json"), timeout=120)
    rows = json.loads((tmp_path / "hot.json").read_text())["rows"]
    assert any(r["system"] == "servelm" and r["median_us"] > 0 for r in rows)


def _has(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None
