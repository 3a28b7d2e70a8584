"""How closely the transformers engine's runner follows the model it serves: its next-token logits against
the Hugging Face model's own forward in fp32, on real prompts.

    python benchmarks/fidelity.py [--model smollm2|tiny] [--quantization none,int8] [--prompts 4] \
        [--new-tokens 48] [--out FILE.json]

For each prompt (distinct ~250-token prompts of the ``real`` workload, in the chat template): the fp32 model
answers greedily (``--new-tokens``), then scores the whole text in one forward (the reference logits). The
runner computes the prompt as a prefill, then decodes the answer's tokens one step at a time (the decode path
a server runs), and each step's logits are compared with the reference at that position: mean absolute
difference, and how often the two pick the same next token (argmax agreement). Each ``--quantization``
(``none``: the dtype servelm picks on this machine) is one row. Prints one JSON object, also written to
``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from json_report import emit  # noqa: E402
from serve import workload_messages  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", choices=("smollm2", "tiny"))
    parser.add_argument("--quantization", default="none,int8", help="comma-separated: none, int8")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=48, help="greedy answer tokens per prompt, compared")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from servelm.flavors.engine.runners.int8_linear import QUANTIZATIONS
    from servelm.flavors.engine.runners.llama import LlamaWeights
    from servelm.flavors.transformers import smollm2, tiny_model
    from servelm.flavors.transformers.device import choose_device

    names = args.quantization.split(",")
    unknown = [name for name in names if name not in ("none", *QUANTIZATIONS)]
    if unknown:
        parser.error(f"--quantization: {', '.join(unknown)} (choose from none, {', '.join(QUANTIZATIONS)})")

    path = smollm2() if args.model == "smollm2" else tiny_model("llama")
    tokenizer = AutoTokenizer.from_pretrained(path)
    reference_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    device, dtype = choose_device(None, None, None)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    texts = [reference_text(reference_model, tokenizer, i, args.new_tokens) for i in range(args.prompts)]
    rows = []
    for name in names:
        quantization = None if name == "none" else name
        weights = LlamaWeights(model, dtype, quantization)
        rows.append({"quantization": name, **compare(weights, texts)})
    report = {"model": args.model, "dtype": str(dtype).removeprefix("torch."), "device": str(device), "rows": rows}
    emit(report, args.out)
    return report


def reference_text(model: Any, tokenizer: Any, index: int, new_tokens: int) -> tuple[list[int], int, Any]:
    """A prompt and the fp32 model's greedy answer as token ids, the prompt's length, and the fp32 model's
    logits over the whole text [tokens, vocab]."""
    import torch

    messages = workload_messages("real", index, "fidelity")
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    with torch.inference_mode():
        ids = model.generate(torch.tensor([prompt]), max_new_tokens=new_tokens, do_sample=False)[0].tolist()
        logits = model(torch.tensor([ids])).logits[0].float()  # [tokens, vocab]
    return ids, len(prompt), logits


def compare(weights: Any, texts: list[tuple[list[int], int, Any]]) -> dict[str, Any]:
    """The runner over ``weights`` against the reference logits of ``texts``, at every decoded position."""
    import torch

    from servelm.flavors.engine.fixed_rows import FixedRows
    from servelm.flavors.engine.runners.llama import TorchRunner

    difference, agreed, positions = 0.0, 0, 0
    with torch.inference_mode():
        for ids, prompt_length, reference in texts:
            runner = FixedRows(TorchRunner(weights), 1, len(ids))
            runner.forward([], [], [(0, ids[:prompt_length], 0)])
            for position in range(prompt_length, len(ids)):
                logits = runner.forward([ids[position]], [position], [])[0].float().cpu()  # [vocab]
                difference += (logits - reference[position]).abs().mean().item()
                agreed += int(logits.argmax() == reference[position].argmax())
                positions += 1
    return {
        "positions": positions,
        "mean_abs_logit_difference": round(difference / positions, 4),
        "argmax_agreement": round(agreed / positions, 4),
    }


if __name__ == "__main__":
    main()
