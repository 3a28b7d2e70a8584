"""benchmarks/chaos.py on the tiny model, two attacks: every row passes (no timing asserts: /health's p99 is
a column of the table, judged by the benchmark, not here)."""

import json


def test_chaos_quick(tmp_path, run_script):
    out = tmp_path / "chaos.json"
    run_script(
        "chaos.py", "--attacks", "sampling-extremes,deep-json-bad-base64", "--victim-tokens", "20", "--out", str(out)
    )
    report = json.loads(out.read_text())
    rows = {row["attack"]: row for row in report["rows"]}
    assert set(rows) == {"sampling-extremes", "deep-json-bad-base64"}
    assert all(row["victim_ok"] and row["server_up"] and row["health_failures"] == 0 for row in rows.values()), rows
    assert rows["deep-json-bad-base64"]["attacker_got"] == "400/400/400"
    assert rows["sampling-extremes"]["attacker_got"] == "200/200/400/400/400"
