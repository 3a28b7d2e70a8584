"""What benchmarks/compare.py writes: the target ratios of the issues (met or missed, with the measured
value), a markdown report and PNG plots. Every figure comes from the rows of one run.

    python benchmarks/report.py benchmarks/results/compare.json           # the README's table of that run
    python benchmarks/report.py benchmarks/results/compare.json --write   # and write its .md and plots again
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, Optional

Rows = list[dict[str, Any]]


def at(
    rows: Rows, system: str, level: int, workload: Optional[str] = None, extra: bool = False
) -> Optional[dict[str, Any]]:
    """The row of ``system`` at ``level`` clients (of ``workload``; a main level, or with ``extra`` an extra
    point), if it had no failures."""
    return next(
        (
            r
            for r in rows
            if r["system"] == system
            and r["concurrency"] == level
            and not r["failures"]
            and (workload is None or r.get("workload", "fixed") == workload)
            and bool(r.get("extra_point")) == extra
        ),
        None,
    )


def first_token(row: dict[str, Any], q: str) -> Optional[float]:
    """TTFT for a streamed system; for one that cannot stream, the first token arrives with the whole reply."""
    return row.get(f"ttft_{q}_s") if row.get("stream") else row.get(f"e2e_{q}_s")


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _own_engines(rows: Rows) -> list[str]:
    """servelm's own LLM engines in the run (servelm-vllm is vLLM underneath)."""
    names = sorted({r["system"] for r in rows if r["kind"] == "llm"})
    return [s for s in names if s.startswith("servelm-") and not s.startswith("servelm-vllm")]


def tiny_targets(rows: Rows, top: int) -> list[str]:
    """Targets of the tiny-model benchmark (request and scheduling overhead), at the top client count."""
    lines = []

    def ratio(a: str, b: str, need: float, what: str, ttft_check: Optional[str] = None) -> None:
        ra, rb = at(rows, a, top), at(rows, b, top)
        if ra is None or rb is None:
            return
        key = "output_throughput" if ra["kind"] == "llm" else "request_throughput"
        value = ra[key] / rb[key] if rb[key] else float("inf")
        extra = ""
        if ttft_check:
            ta, tb = first_token(ra, "p50"), first_token(rb, "p50")
            if ta is not None and tb is not None:
                ok = ta <= tb * (1.1 if ttft_check == "within10" else 1.0)
                extra = f"; TTFT p50 {ta * 1000:.0f} ms vs {tb * 1000:.0f} ms ({'ok' if ok else '**worse**'})"
        lines.append(
            f"- {what}: {a} / {b} = **{value:.2f}x** at {top} clients "
            f"(target >= {need:g}x: {_verdict(value >= need)}){extra}"
        )

    engines = [
        s for s in sorted({r["system"] for r in rows}) if s.startswith("servelm-") and not s.startswith("servelm-agent")
    ]
    own = _own_engines(rows)
    best = max(
        (s for s in own if at(rows, s, top)),
        key=lambda s: at(rows, s, top)["output_throughput"],  # type: ignore[index]
        default=None,
    )
    if best:
        ratio(best, "vllm", 2.0, "best servelm engine vs vLLM", "lower")
    for engine in engines:
        if engine.startswith("servelm-transformers"):
            ratio(engine, "vllm", 1.0, "transformers engine vs vLLM", "lower")
            one, many = at(rows, engine, 1), at(rows, engine, top)
            if one and many:
                value = many["output_throughput"] / one["output_throughput"]
                lines.append(
                    f"- {engine} at {top} clients vs one at a time: **{value:.1f}x** "
                    f"(target >= 10x: {_verdict(value >= 10)})"
                )
        if engine.startswith("servelm-vllm"):
            ratio(engine, "vllm", 0.95, "servelm on vLLM vs vLLM's own server", "within10")
        ratio(engine, "mlflow-transformers", 10.0, f"{engine} vs MLflow's transformers serving")
    agent_level = max((r["concurrency"] for r in rows if r["kind"] == "agent"), default=top)
    for agent in sorted({r["system"] for r in rows if r["kind"] == "agent" and r["system"].startswith("servelm")}):
        a, b = at(rows, agent, agent_level), at(rows, "mlflow-agent", agent_level)
        if a and b:
            value = a["request_throughput"] / b["request_throughput"]
            p99 = f"p99 {a['e2e_p99_s'] * 1000:.0f} ms vs {b['e2e_p99_s'] * 1000:.0f} ms"
            lines.append(
                f"- trivial ChatAgent: {agent} / mlflow-agent = **{value:.1f}x** requests/s at {agent_level} clients "
                f"(target >= 10x: {_verdict(value >= 10)}); {p99}"
            )
    return lines


def real_targets(rows: Rows, levels: list[int], settings: dict[str, Any]) -> list[str]:
    """Targets of the real-model benchmark (issue 12): throughput and TTFT against vLLM at every client
    count, batching gain, prefix reuse on the agent-like point, and KV memory on the long-prompt point.
    servelm-vllm (servelm's server over vLLM's engine) is set beside vLLM's own server for reference and
    judged on its batching gain, like each of servelm's engines."""
    lines: list[str] = []
    workload = settings.get("workload", "real")
    own = _own_engines(rows)
    vllm_rows = {level: at(rows, "vllm", level, workload) for level in levels}
    # servelm's server over vLLM's engine: set beside vLLM's own server for what servelm's API costs
    over_vllm = sorted({r["system"] for r in rows if r["kind"] == "llm" and r["system"].startswith("servelm-vllm")})
    for engine in own + over_vllm:
        for level in levels:
            mine, theirs = at(rows, engine, level, workload), vllm_rows[level]
            if mine is None or theirs is None:
                continue
            value = mine["output_throughput"] / theirs["output_throughput"]
            if engine in over_vllm:
                lines.append(f"- {engine} / vllm at {level} clients: **{value:.2f}x** output tok/s (for reference)")
                continue
            need = 1.0 if engine.startswith(("servelm-transformers", "servelm-onnx")) else 0.0
            ta, tb = first_token(mine, "p50"), first_token(theirs, "p50")
            ttft = (
                f"; TTFT p50 {ta * 1000:.0f} ms vs {tb * 1000:.0f} ms ({'ok' if ta <= tb else '**worse**'})"
                if ta is not None and tb is not None
                else ""
            )
            lines.append(
                f"- {engine} / vllm at {level} clients: **{value:.2f}x** output tok/s "
                f"(target >= {need:g}x: {_verdict(value >= need)}){ttft}"
            )
    if 16 in levels:
        at16 = {s: row for s in own if (row := at(rows, s, 16, workload)) is not None}
        best = max(at16, key=lambda s: at16[s]["output_throughput"], default=None)
        theirs = vllm_rows[16]
        if best and theirs:
            value = at16[best]["output_throughput"] / theirs["output_throughput"]
            lines.append(
                f"- best servelm engine ({best}) / vllm at 16 clients: **{value:.2f}x** "
                f"(target >= 1.5x: {_verdict(value >= 1.5)})"
            )
        for system in own + over_vllm + ["vllm"]:
            one, many = at(rows, system, 1, workload), at(rows, system, 16, workload)
            if one and many:
                value = many["output_throughput"] / one["output_throughput"]
                target = f" (target >= 4x: {_verdict(value >= 4)})" if system != "vllm" else " (for reference)"
                lines.append(f"- {system}: 16 streams / 1 stream = **{value:.1f}x**{target}")
    for point in (r for r in rows if r.get("extra_point") and r.get("workload") == "agent"):
        # the baseline: the same prompt shape with nothing shared (the unshared point), else the main workload
        unshared = at(rows, point["system"], point["concurrency"], "unshared", extra=True)
        baseline = "unshared" if unshared else workload
        plain = unshared or at(rows, point["system"], point["concurrency"], workload)
        if plain and plain.get("ttft_p50_s") and point.get("ttft_p50_s"):
            value = point["ttft_p50_s"] / plain["ttft_p50_s"]
            lines.append(
                f"- {point['system']}: agent-like TTFT p50 / TTFT p50 of {baseline} prompts "
                f"at {point['concurrency']} clients = **{value:.2f}x** "
                f"({point['ttft_p50_s'] * 1000:.0f} ms vs {plain['ttft_p50_s'] * 1000:.0f} ms; "
                f"target <= 0.5x: {_verdict(value <= 0.5)})"
            )
    kv_token = settings.get("kv_bytes_per_token") or {}
    for point in (r for r in rows if r.get("extra_point") and r.get("workload") == "long" and r.get("peak_rss_mb")):
        live = point["concurrency"] * (
            (point.get("prompt_tokens_mean") or 0) + settings.get("max_tokens", 0)
        )  # tokens at the end of a wave
        # MiB: the server loaded and idle, before its first level (caches it keeps count as growth). Not the
        # lowest reading: where the kernel pages out mapped files that sit idle (DAMON's pageout), a reading
        # between levels can miss weights that come back with the next request, and they are not growth
        idle = next(r["rss_before_mb"] for r in rows if r["system"] == point["system"] and r.get("rss_before_mb"))
        grown = point["peak_rss_mb"] - idle
        store: Any = kv_token.get(point["system"]) or kv_token.get(
            "servelm" if point["system"].startswith("servelm") else "vllm"
        )  # bytes per token: by system, or one figure for every servelm system
        needed = live * store / 2**20 if store else None  # MiB
        judged = (
            f"; KV the live tokens need: {needed:.0f} MiB, growth / need = **{grown / needed:.2f}x** "
            f"(target <= 2x: {_verdict(grown <= 2 * needed)})"
            if needed
            else ""
        )
        lines.append(
            f"- {point['system']}: {point['concurrency']} clients "
            f"x ~{point.get('prompt_tokens_mean', 0):.0f}-token prompts: "
            f"peak RSS {point['peak_rss_mb']:.0f} MiB ({grown:.0f} MiB over the loaded, idle server){judged}"
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    settings = report["settings"]
    rows, top = report["rows"], max(settings["concurrency"])
    real = settings.get("model", "tiny") != "tiny"
    ms: Callable[[Optional[float]], str] = lambda v: "-" if v is None else f"{v * 1000:.1f} ms"  # noqa: E731
    out = [
        f"# servelm vs vLLM vs MLflow: {settings.get('model', 'tiny')} ({report['date']})",
        "",
        f"Machine: {report['machine']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)
        + ".",
        "Load: benchmarks/serve.py (aiohttp, a fresh client process per level, the same for every system), "
        f"{settings['requests']} requests per level or two per client if more (extra points: half that), "
        f"workload `{settings.get('workload', 'fixed')}`, max_tokens {settings['max_tokens']} "
        "with ignore_eos where supported, temperature 0"
        + (
            f"; each level run {settings.get('repeat')} times, the median kept."
            if settings.get("repeat", 1) > 1
            else "."
        ),
        (
            "Systems ran one after another in this one run. "
            "TTFT for MLflow (no streaming) is its whole reply's latency (marked *)."
        ),
        "",
        "## LLM (streamed chat completions)",
        "",
        (
            "| system | workload | clients | prompt tokens | output tok/s | req/s | TTFT p50 | TTFT p99 | TPOT p50 "
            "| ITL p50 | peak RSS | failures |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in (r for r in rows if r["kind"] == "llm"):
        star = "" if r["stream"] else "*"
        rss = f"{r['peak_rss_mb']:.0f} MiB" if r.get("peak_rss_mb") else "-"
        out.append(
            f"| {r['system']} | {r.get('workload', 'fixed')} | {r['concurrency']} | "
            f"{r.get('prompt_tokens_mean') or '-'} | {r['output_throughput']:.1f} | {r['request_throughput']:.2f} | "
            f"{ms(first_token(r, 'p50'))}{star} | {ms(first_token(r, 'p99'))}{star} | {ms(r.get('tpot_p50_s'))} | "
            f"{ms(r.get('itl_p50_s'))} | {rss} | {r['failures']} |"
        )
    agents = [r for r in rows if r["kind"] == "agent"]
    if agents:
        out += [
            "",
            "## Trivial ChatAgent (request overhead, not streamed)",
            "",
            "| system | route | clients | req/s | p50 | p99 | failures | load |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in agents:
            out.append(
                f"| {r['system']} | {r['route']} | {r['concurrency']} | {r['request_throughput']:.0f} | "
                f"{ms(r['e2e_p50_s'])} | {ms(r['e2e_p99_s'])} | "
                f"{r['failures']} | {r.get('load_tool', 'aiohttp')} |"
            )
    targets = real_targets(rows, settings["concurrency"], settings) if real else tiny_targets(rows, top)
    out += ["", "## Targets", ""] + (targets or ["- (not enough systems in this run to compute the target ratios)"])
    if report["skipped"]:
        out += ["", "## Skipped", ""] + [f"- {name}: {why}" for name, why in report["skipped"].items()]
    out += ["", "Reproduce: `python benchmarks/compare.py " + " ".join(report["argv"]) + "`", ""]
    return "\n".join(out)


def plots(report: dict[str, Any], out_dir: str, stem: str) -> list[str]:
    """Throughput and TTFT vs concurrency, one line per LLM system (skipped without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    rows = [r for r in report["rows"] if r["kind"] == "llm" and not r["failures"] and not r.get("extra_point")]
    systems = sorted({r["system"] for r in rows})
    settings = report["settings"]
    written = []
    for metric, ylabel, fname in (
        ("output_throughput", "output tokens/s", "throughput"),
        ("ttft", "time to first token (ms)", "ttft"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for system in systems:
            mine = sorted((r for r in rows if r["system"] == system), key=lambda r: r["concurrency"])
            xs = [r["concurrency"] for r in mine]
            if metric == "ttft":
                ax.plot(xs, [(first_token(r, "p50") or 0) * 1000 for r in mine], marker="o", label=f"{system} p50")
                ax.plot(
                    xs,
                    [(first_token(r, "p99") or 0) * 1000 for r in mine],
                    marker="x",
                    linestyle="--",
                    label=f"{system} p99",
                )
                ax.set_yscale("log")
            else:
                ax.plot(xs, [r[metric] for r in mine], marker="o", label=system)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.set_title(
            f"{settings.get('model', 'tiny')}, workload {settings.get('workload', 'fixed')}, "
            f"{settings['max_tokens']} tokens per request ({report['date']})"
        )
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out_dir, f"{stem}-{fname}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def summary(report: dict[str, Any]) -> str:
    """One line per LLM system: output tok/s and TTFT p50 at each main client count, and the ratio to vLLM
    at each (the README's table)."""
    rows, settings = report["rows"], report["settings"]
    levels, workload = settings["concurrency"], settings.get("workload", "fixed")
    systems = sorted({r["system"] for r in rows if r["kind"] == "llm"}, key=lambda s: (s == "vllm", s))
    header = "| system | " + " | ".join(f"{n} client{'s' if n > 1 else ''}: tok/s (TTFT p50)" for n in levels)
    out = [header + " |", "| --- |" + " --- |" * len(levels)]
    for system in systems:
        cells = []
        for level in levels:
            mine, theirs = at(rows, system, level, workload), at(rows, "vllm", level, workload)
            if mine is None:
                cells.append("-")
                continue
            ttft = first_token(mine, "p50")
            cell = (
                f"{mine['output_throughput']:.0f} ({ttft * 1000:.0f} ms)"
                if ttft is not None
                else f"{mine['output_throughput']:.0f}"
            )
            if theirs is not None and system != "vllm":
                cell += f", **{mine['output_throughput'] / theirs['output_throughput']:.2f}x**"
            cells.append(cell)
        out.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    path = sys.argv[1]
    with open(path) as f:
        results = json.load(f)
    if "--write" in sys.argv[2:]:
        stem = os.path.splitext(path)[0]
        with open(stem + ".md", "w") as f:
            f.write(markdown(results))
        plots(results, os.path.dirname(stem), os.path.basename(stem))
    print(summary(results))
