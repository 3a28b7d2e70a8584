"""benchmarks/hot_path.py --quick: servelm's per-request overhead measured (no timing asserts)."""

import json


def test_hot_path_quick(tmp_path, run_script):
    run_script("hot_path.py", "--quick", "--out", str(tmp_path / "hot.json"))
    rows = json.loads((tmp_path / "hot.json").read_text())["rows"]
    assert any(r["system"] == "servelm" and r["median_us"] > 0 for r in rows)
