import json

import pytest


def test_fidelity_quick(tmp_path, run_script):
    pytest.importorskip("torch")
    out = tmp_path / "fidelity.json"
    run_script(*"fidelity.py --model tiny --prompts 1 --new-tokens 4 --quantization none,int8 --out".split(), str(out))
    report = json.loads(out.read_text())
    assert [row["quantization"] for row in report["rows"]] == ["none", "int8"]
    for row in report["rows"]:
        assert row["positions"] >= 1
        assert 0 <= row["argmax_agreement"] <= 1 and row["mean_abs_logit_difference"] >= 0
