import json

import pytest


def test_skinny_linear_quick(tmp_path, run_script):
    pytest.importorskip("numba")
    from servelm.flavors.engine.runners.skinny_linear import skinny_kernel, skinny_window

    if skinny_kernel() is None:
        pytest.skip("the skinny kernel runs on x86 CPUs")
    out = tmp_path / "skinny.json"
    run_script(*"skinny_linear.py --model tiny --tokens 1,5 --repeat 1 --out".split(), str(out))
    report = json.loads(out.read_text())
    assert [row["tokens"] for row in report["steps"]] == [1, 5]
    assert all(row["skinny_ms"] > 0 and row["torch_ms"] > 0 for row in report["steps"])
    assert report["window"] == list(skinny_window()) and "cpu_features" in report["provenance"]
