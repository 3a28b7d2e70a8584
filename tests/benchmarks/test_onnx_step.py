import json

import pytest

from servelm.flavors.engine.attention.bf16_intrinsics import has_bf16_dot


def test_onnx_step_quick(tmp_path, run_script):
    pytest.importorskip("onnxruntime_genai")
    pytest.importorskip("numba")
    out = tmp_path / "onnx_step.json"
    args = "onnx_step.py --model tiny --rows 1,3 --positions 20 --prefill 16 --steps 2 --repeat 1 --transformers --out"
    run_script(*args.split(), str(out))
    report = json.loads(out.read_text())
    assert [row["step"] for row in report["steps"]] == [
        "decode 1 rows at 20 positions",
        "decode 3 rows at 20 positions",
        "prefill of 16 tokens",
    ]
    assert all(row["whole_ms"] > 0 for row in report["steps"])
    assert all(row["transformers_ms"] > 0 and row["transformers_over_whole"] > 0 for row in report["steps"])
    if has_bf16_dot():
        assert all(row["cut_ms"] > 0 for row in report["steps"])
    else:  # the cut graph needs avx512_bf16: the whole graph is timed alone, and the run says so
        assert report["ways"] == ["float32", "transformers"] and all(row["cut_ms"] is None for row in report["steps"])
