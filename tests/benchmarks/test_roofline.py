"""benchmarks/roofline.py --model tiny: the floors it derives from its measurements (no timing asserts)."""

import json

import pytest


def test_roofline_quick(tmp_path, run_script):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "roofline.json"
    run_script("roofline.py", "--model", "tiny", "--read-mib", "64", "--repeat", "1", "--out", str(out))
    report = json.loads(out.read_text())
    assert report["read_gb_s"] > 0 and report["weights_read_per_step"] > 0
    fp32, bf16, int4 = (report["precisions"][p] for p in ("fp32", "bf16", "int4"))
    # bytes per weight: 4, 2, and 4-bit blocks of 32 with an fp32 scale and a 4-bit zero point
    assert report["weights_read_per_step"] * 4 / 1e6 == pytest.approx(fp32["weight_mb"], abs=0.1)
    assert int4["weight_mb"] < bf16["weight_mb"] < fp32["weight_mb"]
    for floors in (fp32, bf16, int4):  # a step reads its weights once: fewer bytes, an earlier floor
        assert floors["step_floor_ms"] > 0 and floors["prompt_floor_ms"] > 0 and floors["one_client_tok_s"] > 0
    assert int4["step_floor_ms"] < bf16["step_floor_ms"] < fp32["step_floor_ms"]
