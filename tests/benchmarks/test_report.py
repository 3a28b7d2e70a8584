"""benchmarks/report.py on a made-up run: which systems are judged against which targets."""

import json


def row(system, clients, tok_s, ttft_s=0.2):
    return {
        "system": system,
        "kind": "llm",
        "workload": "real",
        "concurrency": clients,
        "failures": 0,
        "stream": True,
        "output_throughput": tok_s,
        "request_throughput": tok_s / 128,
        "ttft_p50_s": ttft_s,
        "ttft_p99_s": ttft_s,
        "tpot_p50_s": 0.01,
        "itl_p50_s": 0.01,
        "prompt_tokens_mean": 251,
    }


def report_of(tmp_path, run_script, rows, **settings):
    """The markdown report.py writes for a run of ``rows`` (a smollm2 ``real`` run at 1 and 16 clients)."""
    run = {
        "date": "2026-12-01",
        "machine": "test",
        "versions": {},
        "settings": {
            "model": "smollm2",
            "workload": "real",
            "concurrency": [1, 16],
            "requests": 16,
            "max_tokens": 128,
            **settings,
        },
        "rows": rows,
        "skipped": {},
        "argv": [],
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    run_script("report.py", str(path), "--write")
    return (tmp_path / "run.md").read_text()


def test_servelm_vllm_is_compared_for_reference_and_judged_on_batching(tmp_path, run_script):
    rows = [
        row("servelm-onnx", 1, 60.0),
        row("servelm-onnx", 16, 300.0),
        row("servelm-vllm", 1, 70.0),
        row("servelm-vllm", 16, 315.0),
        row("vllm", 1, 70.0),
        row("vllm", 16, 300.0),
    ]
    text = report_of(tmp_path, run_script, rows)
    assert "- servelm-vllm / vllm at 16 clients: **1.05x** output tok/s (for reference)" in text
    assert "- servelm-vllm: 16 streams / 1 stream = **4.5x** (target >= 4x: met)" in text
    assert "- servelm-onnx: 16 streams / 1 stream = **5.0x** (target >= 4x: met)" in text
    assert "- servelm-onnx / vllm at 1 clients: **0.86x** output tok/s (target >= 1x: **missed**)" in text
    # vLLM underneath is not one of servelm's own engines: never the best one
    assert "- best servelm engine (servelm-onnx) / vllm at 16 clients: **1.00x**" in text


def test_memory_growth_counts_from_the_loaded_server_before_its_first_level(tmp_path, run_script):
    def with_memory(r, before, peak, **extra):
        return {**r, "rss_before_mb": before, "peak_rss_mb": peak, **extra}

    rows = [
        with_memory(row("servelm-onnx", 1, 60.0), 2000.0, 2000.0),
        # a reading between levels after the kernel paged out idle mapped weights: not the baseline
        with_memory(row("servelm-onnx", 16, 300.0), 900.0, 2000.0),
        with_memory(row("servelm-onnx", 32, 40.0), 2000.0, 3000.0, workload="long", extra_point=True),
    ]
    text = report_of(tmp_path, run_script, rows, kv_bytes_per_token={"servelm-onnx": 1024 * 1024})
    # 32 clients x (251 + 128) tokens x 1 MiB each; 1000 MiB grown over the first reading
    assert "peak RSS 3000 MiB (1000 MiB over the loaded, idle server)" in text
    assert "KV the live tokens need: 12128 MiB" in text
