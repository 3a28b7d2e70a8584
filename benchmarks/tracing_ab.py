"""What tracing costs: servelm's transformers engine with OpenTelemetry tracing off and on (every request's spans
exported over OTLP to a sink beside the server, ``otlp_sink.py``), side by side in one run, on the real workload.

    python benchmarks/tracing_ab.py [--model smollm2] [--clients 16] [--requests 48] [--rounds 3] \
        [--max-tokens 128] [--out benchmarks/results/tracing-ab.json]

Rounds alternate the order (off, on / on, off ...), each system started fresh, so the machine's drift over minutes
falls on both. The result is the median over rounds of on / off output throughput (and TTFT), with every run kept.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from json_report import emit  # noqa: E402
from measure import measure  # noqa: E402
from systems import build_system, prepare_models, start, stop  # noqa: E402

OFF, ON = "servelm-transformers", "servelm-transformers-traced"


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", choices=("tiny", "smollm2"))
    parser.add_argument("--workload", default="real", choices=("fixed", "real"))
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=48, help="requests per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    # what build_system reads besides these
    options = argparse.Namespace(**vars(args), servelm_threads=None, vllm_kv_gib=1, max_model_len=None)
    runs: dict[str, list[dict[str, Any]]] = {OFF: [], ON: []}
    with tempfile.TemporaryDirectory(prefix="servelm-tracing-ab-") as work:
        models = prepare_models(work, [OFF], None, args.model)
        for round_ in range(args.rounds):
            for name in (OFF, ON) if round_ % 2 == 0 else (ON, OFF):
                system = build_system(name, models, options, {}, 1)
                proc, base, log = start(system, work)
                try:
                    row = measure(system, base, [args.clients], args.requests, 1, args.workload, proc, f"r{round_}")[0]
                finally:
                    stop(proc)
                if name == ON:  # the sink's count: the spans were produced and sent, not dropped
                    with open(log) as f:
                        row["otlp_sink"] = next((ln.strip() for ln in f if ln.startswith("otlp sink:")), "no report")
                runs[name].append(row)
    ratios = [on["output_throughput"] / off["output_throughput"] for off, on in zip(runs[OFF], runs[ON])]
    ttft = [on["ttft_p50_s"] / off["ttft_p50_s"] for off, on in zip(runs[OFF], runs[ON])]
    report = {
        "benchmark": "tracing_ab",
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "throughput_on_over_off": {"median": statistics.median(ratios), "rounds": ratios},
        "ttft_p50_on_over_off": {"median": statistics.median(ttft), "rounds": ttft},
        "runs": runs,
    }
    emit(report, args.out)
    return report


if __name__ == "__main__":
    main()
