"""Loading a running system (benchmarks/compare.py): benchmarks/serve.py in a fresh client process per level
(or wrk for non-streamed agents) while the memory of the system's process tree is sampled."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from typing import Any, Optional

from systems import PYTHON, System


def measure_with_wrk(system: System, base: str, clients: int, seconds: float, work: str) -> dict[str, Any]:
    """Requests/s and latency of a non-streamed route from wrk (C, one thread): at thousands of requests/s
    a Python client would be the bottleneck, not the server."""
    script = os.path.join(work, "post.lua")
    with open(script, "w") as f:
        f.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = '
            + json.dumps(json.dumps(system.body))
            + "\n"
        )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--latency", "-s", script, base + system.path],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout

    def latency(label: str) -> Optional[float]:
        for line in out.splitlines():
            parts = line.split()
            if parts and parts[0] == label:
                value = parts[1]
                scale = 1e-6 if value.endswith("us") else 1e-3 if value.endswith("ms") else 1.0
                return round(float(value.rstrip("ums")) * scale, 5)
        return None

    rate = next((float(line.split()[1]) for line in out.splitlines() if line.startswith("Requests/sec")), 0.0)
    total = next((int(line.split()[0]) for line in out.splitlines() if "requests in" in line), 0)
    bad = next((int(line.split()[-1]) for line in out.splitlines() if "Non-2xx" in line), 0)
    row = {
        "concurrency": clients,
        "requests": total,
        "failures": bad,
        "duration_s": seconds,
        "request_throughput": rate,
        "output_tokens": 0,
        "output_throughput": 0.0,
        "e2e_mean_s": None,
        "e2e_p50_s": latency("50%"),
        "e2e_p99_s": latency("99%"),
        "load_tool": "wrk",
    }
    row.update(system=system.name, kind=system.kind, stream=False, route=system.path)
    print(json.dumps(row), flush=True)
    return row


def measure(
    system: System,
    base: str,
    levels: list[int],
    requests: int,
    repeat: int = 1,
    workload: str = "fixed",
    proc: Optional[subprocess.Popen[bytes]] = None,
    salt: str = "",
) -> list[dict[str, Any]]:
    """One row per concurrency level from benchmarks/serve.py, run in a fresh process per level (a load
    client sharing its heap would spend its time in the garbage collector). With ``repeat`` > 1 the
    levels run that many times over and each level's row is the run with the median throughput (all
    runs are kept under ``runs``). With ``proc``, the memory of the server's process tree is sampled
    while each level runs (``rss_before_mb``, ``peak_rss_mb``). Each level sends at least two requests per
    client (a steady state, not one burst), and each run its own prompts (``salt``): no server's prefix
    cache sees a prompt twice."""
    if repeat > 1:
        rounds = [measure(system, base, levels, requests, 1, workload, proc, f"{salt}r{i}") for i in range(repeat)]
        rows = []
        for i in range(len(levels)):
            runs = sorted((r[i] for r in rounds), key=lambda r: r["output_throughput"] or r["request_throughput"])
            rows.append(
                {
                    **runs[len(runs) // 2],
                    "runs": [
                        {k: r[k] for k in ("output_throughput", "request_throughput", "ttft_p50_s") if k in r}
                        for r in runs
                    ],
                }
            )
        return rows
    rows = []
    for level in levels:
        argv = (
            [
                PYTHON,
                os.path.join(os.path.dirname(os.path.abspath(__file__)), "serve.py"),
                "--url",
                base,
                "--path",
                system.path,
                "--concurrency",
                str(level),
                "--requests",
                str(max(requests, 2 * level)),
                "--body",
                json.dumps(system.body),
                "--workload",
                workload,
                "--salt",
                salt,
            ]
            + (["--stream"] if system.stream else [])
            + (["--fresh-connections"] if system.fresh_connections else [])
        )
        sampler = MemorySampler(proc.pid) if proc is not None else None
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=7200)
        finally:
            memory = sampler.stop() if sampler is not None else {}
        if out.returncode != 0:
            raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row.update(
            system=system.name, kind=system.kind, stream=system.stream, route=system.path, load_tool="aiohttp", **memory
        )
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (from /proc; 0 where it cannot be read)."""
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total


class MemorySampler:
    """Samples ``tree_rss(pid)`` every 0.2 s on a thread until stopped; reports the first and the peak."""

    def __init__(self, pid: int):
        self.pid = pid
        self.before = tree_rss(pid)
        self.peak = self.before
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.2):
            self.peak = max(self.peak, tree_rss(self.pid))

    def stop(self) -> dict[str, float]:
        self._done.set()
        self._thread.join()
        return {"rss_before_mb": round(self.before / 2**20, 1), "peak_rss_mb": round(self.peak / 2**20, 1)}
