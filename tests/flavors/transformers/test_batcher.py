"""The continuous batcher: greedy parity with transformers' generate, joins, aborts, limits, sampling."""

import pytest

torch = pytest.importorskip("torch")

from servelm.flavors.transformers.batcher import ContinuousBatcher  # noqa: E402
from servelm.flavors.transformers.sampling import SamplingParams  # noqa: E402


@pytest.fixture(scope="module")
def lm(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    return AutoModelForCausalLM.from_pretrained(tiny_llama).eval(), AutoTokenizer.from_pretrained(tiny_llama)


def prompt(tokenizer, text):
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


def test_greedy_matches_generate_with_mid_batch_joins(lm):
    model, tokenizer = lm
    prompts = [prompt(tokenizer, t) for t in ("hello world", "the model server is fast today", "a")]
    reference = [model.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False)[0][len(p):].tolist() for p in prompts]
    batcher = ContinuousBatcher(model, tokenizer, max_num_seqs=8)
    greedy = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    seqs = [batcher.add(prompts[0], greedy)]
    batcher.step()
    batcher.step()  # the first sequence is 3 tokens ahead when the others join
    seqs += [batcher.add(p, greedy) for p in prompts[1:]]
    sizes = []
    while batcher.has_work():
        batcher.step()
        sizes.append(batcher.last_batch_size)
    for seq, ref in zip(seqs, reference):
        stop_at = ref.index(model.generation_config.eos_token_id) if model.generation_config.eos_token_id in ref else len(ref)
        assert seq.generated[:stop_at] == ref[:stop_at]
        assert seq.finish_reason == "length"
    assert max(sizes) == 3


def test_greedy_parity_through_gathered_prefills_lazy_repacks_and_buffer_growth(lm):
    """Newcomers gathered while the batch is busy, rows finishing at different steps (left in the batch
    until a repack), and a sequence longer than the cache's spare columns: every row still decodes
    exactly what generate() gives it alone."""
    model, tokenizer = lm
    texts = ["hello world", "the model server is fast today", "a", "many questions at once, please", "b c d e f g", "stop"]
    budgets = [70, 5, 9, 14, 3, 20]
    prompts = [prompt(tokenizer, t) for t in texts]
    reference = [model.generate(torch.tensor([p]), max_new_tokens=n, do_sample=False)[0][len(p):].tolist() for p, n in zip(prompts, budgets)]
    batcher = ContinuousBatcher(model, tokenizer, max_num_seqs=8, prefill_interval=3, busy_rows=1)
    seqs = {}
    arrivals = {0: [0, 1], 2: [2], 3: [3, 4], 7: [5]}  # step -> sequences that arrive before it
    step = 0
    sizes = []
    while step < 8 or batcher.has_work():
        for i in arrivals.get(step, []):
            seqs[i] = batcher.add(prompts[i], SamplingParams(max_tokens=budgets[i], temperature=0, ignore_eos=True))
        batcher.step()
        sizes.append(len(batcher.running))
        step += 1
    for i, ref in enumerate(reference):
        assert seqs[i].generated == ref, texts[i]
        assert seqs[i].finish_reason == "length"
    assert not batcher.running and batcher._cache is None
    assert max(sizes) >= 4


def test_abort_frees_the_row_and_others_continue(lm):
    model, tokenizer = lm
    batcher = ContinuousBatcher(model, tokenizer, max_num_seqs=4)
    a = batcher.add(prompt(tokenizer, "one"), SamplingParams(max_tokens=50, temperature=0, ignore_eos=True))
    b = batcher.add(prompt(tokenizer, "two"), SamplingParams(max_tokens=6, temperature=0, ignore_eos=True))
    batcher.step()
    batcher.abort(a)
    batcher.step()
    assert a.finish_reason == "abort" and len(batcher.running) == 1
    while batcher.has_work():
        batcher.step()
    assert b.finish_reason == "length" and len(b.generated) == 6 and not batcher.running


def test_max_running_is_bounded(lm):
    model, tokenizer = lm
    batcher = ContinuousBatcher(model, tokenizer, max_num_seqs=2)
    for i in range(5):
        batcher.add(prompt(tokenizer, f"q{i}"), SamplingParams(max_tokens=3, temperature=0, ignore_eos=True))
    seen = []
    while batcher.has_work():
        batcher.step()
        seen.append(len(batcher.running))
    assert max(seen) <= 2


def test_stop_string_ends_generation(lm):
    model, tokenizer = lm
    free = ContinuousBatcher(model, tokenizer)
    seq = free.add(prompt(tokenizer, "hi"), SamplingParams(max_tokens=16, temperature=0, ignore_eos=True))
    while free.has_work():
        free.step()
    stop = seq.text[3:6]
    bounded = ContinuousBatcher(model, tokenizer)
    stopped = bounded.add(prompt(tokenizer, "hi"), SamplingParams(max_tokens=16, temperature=0, ignore_eos=True, stop=[stop]))
    while bounded.has_work():
        bounded.step()
    assert stopped.finish_reason == "stop" and stopped.text == seq.text[: seq.text.index(stop)]
