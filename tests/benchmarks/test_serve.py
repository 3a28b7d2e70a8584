"""benchmarks/serve.py end to end against real local servers: an agent and a streamed LLM."""

import json

import pytest

pytest.importorskip("aiohttp")


def test_serve_py_against_an_agent_server(tmp_path, chat_agent_code, serve, run_script):
    from servelm.flavors.pyfunc import save_model

    save_model(str(tmp_path / "agent"), python_model=chat_agent_code)
    out = tmp_path / "rows.jsonl"
    with serve(str(tmp_path / "agent")) as (base, _):
        run_script(
            "serve.py", "--url", base, "--concurrency", "1,2", "--requests", "4", "--label", "agent", "--out", str(out)
        )
        run_script(
            "serve.py",
            "--url",
            base,
            "--path",
            "/invocations",
            "--concurrency",
            "2",
            "--requests",
            "4",
            "--stream",
            "--out",
            str(out),
        )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["concurrency"] for r in rows] == [1, 2, 2] and all(r["failures"] == 0 for r in rows)
    assert rows[2]["ttft_p50_s"] is not None and rows[0]["system"] == "agent"


def test_serve_py_streams_an_llm(tiny_llama_dir, serve, run_script):
    with serve(tiny_llama_dir) as (base, _):
        out = run_script(
            "serve.py",
            "--url",
            base,
            "--concurrency",
            "3",
            "--requests",
            "6",
            "--max-tokens",
            "5",
            "--stream",
            "--ignore-eos",
        )
    row = json.loads(out.strip().splitlines()[-1])
    assert (
        row["failures"] == 0
        and row["output_tokens"] == 30
        and row["itl_p50_s"] is not None
        and row["tpot_p50_s"] is not None
    )
