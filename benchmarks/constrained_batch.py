"""What one grammar-constrained row costs the free rows that share its batch.

    python benchmarks/constrained_batch.py [--model smollm2|tiny] [--rows 8] [--tokens 96] [--repeat 5]
                                           [--out FILE.json]

The transformers flavor's batcher (the Scheduler over the torch runner) decodes ``--rows`` free rows plus
one more row, greedy, ``ignore_eos``. In run "free" the extra row is free too; in run "constrained" it
follows a JSON schema (llguidance computes its token mask each step and the runner masks its logits). The
batch has the same rows in both, so the ratio of their decode step times is the grammar's cost alone, the
time every free row waits for it. Runs alternate, ``--repeat`` times each, after one warm-up of each (the
schema compiles once there); medians are reported. Prints one JSON object, also written to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "year": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "summary": {"type": "string"},
    },
    "required": ["title", "year", "tags", "summary"],
}


def load(model: str) -> tuple[Any, Any]:
    """(model, tokenizer) as the transformers engine runs them on this machine (bf16 where the CPU has it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from servelm.flavors.transformers import smollm2, tiny_model
    from servelm.flavors.transformers.device import cpu_has_native_bf16

    path = smollm2() if model == "smollm2" else tiny_model()
    dtype = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval(), AutoTokenizer.from_pretrained(path)


def decode_step_seconds(lm: Any, tokenizer: Any, rows: int, tokens: int, constrained: bool) -> float:
    """Median seconds of the decode steps during which all ``rows + 1`` rows are running."""
    from servelm.flavors.engine.hf_batcher import ContinuousBatcher
    from servelm.flavors.engine.sample.params import GuidedDecoding
    from servelm.flavors.engine.sample.torch_sampler import SamplingParams

    batcher = ContinuousBatcher(lm, tokenizer, max_num_seqs=rows + 1, prefix_cache_bytes=0)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Describe a film you like as JSON."}], add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    for i in range(rows):
        batcher.add(prompt_ids + [i + 10], SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True))
    guided = GuidedDecoding("json_schema", json.dumps(SCHEMA)) if constrained else None
    extra = batcher.add(prompt_ids, SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True, guided=guided))
    steps: list[float] = []  # seconds
    while batcher.has_work():
        start = time.perf_counter()
        batcher.step()
        elapsed = time.perf_counter() - start
        if len(batcher.running) == rows + 1 and batcher.last_batch_size == rows + 1 and extra.finish_reason is None:
            steps.append(elapsed)
    if constrained:
        json.loads(tokenizer.decode(extra.generated, skip_special_tokens=True))  # the grammar held: it parses
    return statistics.median(steps[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--rows", type=int, default=8, help="free rows beside the extra row")
    parser.add_argument("--tokens", type=int, default=96, help="tokens each row generates")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    lm, tokenizer = load(args.model)
    runs: dict[str, list[float]] = {"free": [], "constrained": []}
    for warm_up in (True,) + (False,) * args.repeat:
        for kind in runs:
            seconds = decode_step_seconds(lm, tokenizer, args.rows, args.tokens, kind == "constrained")
            if not warm_up:
                runs[kind].append(seconds)
    free, constrained = statistics.median(runs["free"]), statistics.median(runs["constrained"])
    result = {
        "model": args.model,
        "rows": args.rows + 1,
        "tokens": args.tokens,
        "repeat": args.repeat,
        "step_ms_all_free": round(free * 1000, 2),
        "step_ms_one_constrained": round(constrained * 1000, 2),
        "slowdown": round(constrained / free, 3),
        "target": "<= 1.10",
    }
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
