"""benchmarks/compare.py end to end: it starts each system, runs serve.py against it and writes the results."""

import json

import pytest

pytest.importorskip("aiohttp")


def markdown_rows(text):
    """The rows of every markdown table in ``text``, as {header: cell}."""
    rows, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not all(set(c) <= {"-", ":"} for c in cells):
            rows.append(dict(zip(header, cells)))
    return rows


def test_compare_py_runs_systems_and_writes_results(tmp_path, tiny_llama, run_script, python_path, has_module):
    systems = "servelm-transformers,servelm-agent" + (",servelm-onnx" if has_module("onnxruntime_genai") else "")
    run_script(
        "compare.py",
        "--systems",
        systems + ",vllm",
        "--concurrency",
        "1,2",
        "--requests",
        "4",
        "--agent-requests",
        "16",
        "--agent-seconds",
        "1",
        "--max-tokens",
        "4",
        "--out-dir",
        str(tmp_path),
        "--name",
        "t",
        "--vllm-python",
        python_path,
        timeout=1800,
    )
    report = json.loads((tmp_path / "t.json").read_text())
    names = {r["system"] for r in report["rows"]}
    assert {"servelm-transformers", "servelm-agent"} <= names and all(r["failures"] == 0 for r in report["rows"])
    if not has_module("vllm"):
        assert "vllm" in report["skipped"]
    table = (tmp_path / "t.md").read_text()
    assert any(
        row.get("system") == "servelm-transformers" and row.get("clients") == "2" for row in markdown_rows(table)
    )
    assert "## Targets" in table
    if has_module("matplotlib"):
        assert (tmp_path / "t-throughput.png").stat().st_size > 0 and (tmp_path / "t-ttft.png").stat().st_size > 0
