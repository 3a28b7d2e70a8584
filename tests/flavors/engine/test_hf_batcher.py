"""The continuous batcher (the shared Scheduler over this flavor's runner): greedy parity with transformers'
generate, joins, chunked prefills, aborts, limits, stop strings."""

import pytest

torch = pytest.importorskip("torch")

from servelm.flavors.engine.hf_batcher import ContinuousBatcher  # noqa: E402
from servelm.flavors.engine.sample.torch_sampler import SamplingParams  # noqa: E402
from servelm.flavors.generation import SequenceText  # noqa: E402


@pytest.fixture(scope="module")
def lm(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    return AutoModelForCausalLM.from_pretrained(tiny_llama).eval(), AutoTokenizer.from_pretrained(tiny_llama)


def occupied(batcher):
    """Sequences admitted to the batch (prefilling or decoding)."""
    return len(batcher.running) + len(batcher.prefilling)


def prompt(tokenizer, text):
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
    )
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


def test_greedy_matches_generate_with_mid_batch_joins(lm):
    model, tokenizer = lm
    prompts = [prompt(tokenizer, t) for t in ("hello world", "the model server is fast today", "a")]
    reference = [
        model.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False)[0][len(p) :].tolist() for p in prompts
    ]
    batcher = ContinuousBatcher(model, tokenizer, max_num_seqs=8)
    greedy = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    seqs = [batcher.add(prompts[0], greedy)]
    batcher.step()
    batcher.step()  # the first sequence is 3 tokens ahead when the others join
    seqs += [batcher.add(p, greedy) for p in prompts[1:]]
    sizes = []
    while batcher.has_work():
        outputs = batcher.step()
        sizes.append(len({id(o.seq) for o in outputs}))
    for seq, ref in zip(seqs, reference):
        stop_at = (
            ref.index(model.generation_config.eos_token_id) if model.generation_config.eos_token_id in ref else len(ref)
        )
        assert seq.generated[:stop_at] == ref[:stop_at]
        assert seq.finish_reason == "length"
    assert max(sizes) == 3


def test_last_batch_size_counts_the_sequences_a_step_advanced(lm):
    model, tokenizer = lm
    batcher = ContinuousBatcher(model, tokenizer, max_num_seqs=8)
    greedy = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    batcher.add(prompt(tokenizer, "hello world"), greedy)
    batcher.step()
    batcher.step()
    for text in ("the model server is fast today", "a"):
        batcher.add(prompt(tokenizer, text), greedy)
    sizes = []
    while batcher.has_work():
        batcher.step()
        sizes.append(batcher.last_batch_size)
    assert max(sizes) == 3


def test_greedy_parity_through_chunked_prefills_row_moves_and_cache_growth(lm):
    """Newcomers prefilled a few tokens per step while the batch decodes, rows finishing at different
    steps, and a sequence that crosses many blocks: every row still decodes exactly what generate() gives it alone."""
    model, tokenizer = lm
    texts = [
        "hello world",
        "the model server is fast today",
        "a",
        "many questions at once, please",
        "b c d e f g",
        "stop",
    ]
    budgets = [70, 5, 9, 14, 3, 20]
    prompts = [prompt(tokenizer, t) for t in texts]
    reference = [
        model.generate(torch.tensor([p]), max_new_tokens=n, do_sample=False)[0][len(p) :].tolist()
        for p, n in zip(prompts, budgets)
    ]
    batcher = ContinuousBatcher(model, tokenizer, max_num_seqs=8, prefill_tokens=8)
    seqs = {}
    arrivals = {0: [0, 1], 2: [2], 3: [3, 4], 7: [5]}  # step -> sequences that arrive before it
    step = 0
    sizes = []
    while step < 8 or batcher.has_work():
        for i in arrivals.get(step, []):
            seqs[i] = batcher.add(prompts[i], SamplingParams(max_tokens=budgets[i], temperature=0, ignore_eos=True))
        batcher.step()
        sizes.append(occupied(batcher))
        step += 1
    for i, ref in enumerate(reference):
        assert seqs[i].generated == ref, texts[i]
        assert seqs[i].finish_reason == "length"
    assert not occupied(batcher) and batcher.pool.used() == 0
    assert max(sizes) >= 4


def test_abort_frees_the_row_and_others_continue(lm):
    model, tokenizer = lm
    batcher = ContinuousBatcher(model, tokenizer, max_num_seqs=4)
    a = batcher.add(prompt(tokenizer, "one"), SamplingParams(max_tokens=50, temperature=0, ignore_eos=True))
    b = batcher.add(prompt(tokenizer, "two"), SamplingParams(max_tokens=6, temperature=0, ignore_eos=True))
    batcher.step()
    batcher.abort(a)
    batcher.step()
    assert a.finish_reason == "abort" and occupied(batcher) == 1
    while batcher.has_work():
        batcher.step()
    assert b.finish_reason == "length" and len(b.generated) == 6 and not occupied(batcher)


def test_max_running_is_bounded(lm):
    model, tokenizer = lm
    batcher = ContinuousBatcher(model, tokenizer, max_num_seqs=2)
    for i in range(5):
        batcher.add(prompt(tokenizer, f"q{i}"), SamplingParams(max_tokens=3, temperature=0, ignore_eos=True))
    seen = []
    while batcher.has_work():
        batcher.step()
        seen.append(occupied(batcher))
    assert max(seen) <= 2


def test_steps_move_token_ids_and_stop_strings_are_the_readers(lm):
    """The batcher's outputs are token ids (the answer's, in order; no end-of-sequence token) and it does
    not look for stop strings: its reader makes the text and cuts it there (``SequenceText``)."""
    model, tokenizer = lm
    batcher = ContinuousBatcher(model, tokenizer)
    seq = batcher.add(prompt(tokenizer, "hi"), SamplingParams(max_tokens=16, temperature=0, ignore_eos=True))
    tokens = []
    while batcher.has_work():
        tokens += [t for out in batcher.step() for t in out.token_ids]
    assert tokens == seq.generated and len(tokens) == 16
    whole = tokenizer.decode(tokens, skip_special_tokens=True)
    stop = whole[3:6]
    reader = SequenceText(tokenizer, [stop])
    text = "".join(reader.add([t]) for t in tokens)  # a step at a time, as an engine's Deltas arrive
    assert reader.stopped and text == reader.text == whole[: whole.index(stop)] and reader.finish() == ""
