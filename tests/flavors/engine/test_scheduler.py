"""The Scheduler's step over a real runner (the tiny Llama on the torch runner): one forward pass mixing
decode rows with several prompt chunks, and prompts that reuse a cached prefix, all decoding exactly what
transformers' generate() gives each prompt alone."""

import pytest

torch = pytest.importorskip("torch")

from servelm.flavors.engine.hf_batcher import ContinuousBatcher  # noqa: E402
from servelm.flavors.engine.sample.torch_sampler import SamplingParams  # noqa: E402


@pytest.fixture(scope="module")
def lm(tiny_llama):
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    return AutoModelForCausalLM.from_pretrained(tiny_llama).eval()


def reference(model, prompt_ids, tokens):
    return model.generate(torch.tensor([prompt_ids]), max_new_tokens=tokens, do_sample=False)[0][
        len(prompt_ids) :
    ].tolist()


def greedy(tokens):
    return SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)


def run(batcher):
    steps = 0
    while batcher.has_work():
        batcher.step()
        steps += 1
    return steps


def test_a_step_mixes_decode_rows_and_several_prompt_chunks(lm, tiny_llama):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    batcher = ContinuousBatcher(lm, tokenizer, max_num_seqs=8, prefill_tokens=128)
    prompts = [list(range(5 + i, 20 + 2 * i)) for i in range(5)]
    first = batcher.add(prompts[0], greedy(12))
    batcher.step()  # the first prompt is prefilled: it decodes from the next step on
    later = [batcher.add(p, greedy(10)) for p in prompts[1:]]
    outputs = batcher.step()  # one forward: the first row decodes while four prompts are prefilled
    assert {out.seq.seq_id for out in outputs} == {s.seq_id for s in [first] + later}
    run(batcher)
    for seq, prompt_ids in zip([first] + later, prompts):
        assert seq.generated == reference(lm, prompt_ids, len(seq.generated))


def test_a_shared_prefix_is_computed_once_and_decodes_the_same(lm, tiny_llama):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    batcher = ContinuousBatcher(lm, tokenizer, max_num_seqs=8, block_size=16)
    shared = [(7 * i) % 200 + 3 for i in range(80)]
    prompts = [shared + [11 + i, 12 + i, 13 + i] for i in range(3)]
    seqs = [batcher.add(prompts[0], greedy(8))]
    run(batcher)
    seqs += [batcher.add(p, greedy(8)) for p in prompts[1:]]
    batcher.step()  # admitted: the shared 80 tokens come from the cache, only the rest is computed
    assert all(s.computed == len(shared) + 3 for s in seqs[1:])
    run(batcher)
    assert batcher.prefix_cache is not None and batcher.prefix_cache.hits == 2 * 80
    for seq, prompt_ids in zip(seqs, prompts):
        assert seq.generated == reference(lm, prompt_ids, 8)


def test_prompts_behind_one_cached_prefix_are_attended_together_and_decode_the_same(lm, tiny_llama, monkeypatch):
    """Agents' requests arriving together behind a cached system prompt: their chunks share its blocks, which are
    read once for all of them (``attention/shared_prefix.py``), and each decodes what it decodes alone."""
    from transformers import AutoTokenizer

    from servelm.flavors.engine.runners import llama as runner_module

    calls = []

    def counted(*args, **kwargs):
        calls.append(len(args[1]))
        return shared_prefix_attention(*args, **kwargs)

    shared_prefix_attention = runner_module.shared_prefix_attention
    monkeypatch.setattr(runner_module, "shared_prefix_attention", counted)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    batcher = ContinuousBatcher(lm, tokenizer, max_num_seqs=8, block_size=16)
    if not batcher.runner.shared_prefixes:
        pytest.skip("this torch has no CPU flash attention returning log-sum-exps")
    system = [(5 * i) % 180 + 3 for i in range(90)]
    run_alone = batcher.add(system + [9], greedy(2))
    run(batcher)  # the system prompt's 5 full blocks are cached
    prompts = [system + list(range(30 + 4 * i, 30 + 4 * i + 3 + 9 * i)) for i in range(4)]
    seqs = [batcher.add(p, greedy(6)) for p in prompts]
    run(batcher)
    assert calls and calls[0] == 4  # one attention over the cached prefix for all four chunks of the step
    assert run_alone.generated == reference(lm, system + [9], 2)
    for seq, prompt_ids in zip(seqs, prompts):
        assert seq.generated == reference(lm, prompt_ids, 6)


def test_prompts_arriving_together_compute_their_shared_prefix_once(lm, tiny_llama):
    """The first prompt computes the shared blocks (over two steps, under a small budget); the others wait
    for them, then load them and compute only their own tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    batcher = ContinuousBatcher(lm, tokenizer, max_num_seqs=8, prefill_tokens=64, block_size=16)
    shared = [(3 * i) % 190 + 4 for i in range(80)]
    prompts = [shared + [20 + i, 21 + i, 22 + i] for i in range(3)]
    seqs = [batcher.add(p, greedy(6)) for p in prompts]
    batcher.step()
    assert [s.computed for s in seqs] == [64, 0, 0]  # the others wait: their first block is being computed
    run(batcher)
    assert batcher.prefix_cache is not None and batcher.prefix_cache.hits == 2 * 80
    for seq, prompt_ids in zip(seqs, prompts):
        assert seq.generated == reference(lm, prompt_ids, 6)


def test_a_prompt_repeated_exactly_still_computes_its_last_token(lm, tiny_llama):
    """A prompt of whole blocks seen before: every token but the last is reused (the last block in
    part), since the first token's logits need the last prompt token computed."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    batcher = ContinuousBatcher(lm, tokenizer, max_num_seqs=4, block_size=16)
    prompt_ids = [(5 * i) % 150 + 2 for i in range(48)]
    runs = []
    for _ in range(2):
        seq = batcher.add(prompt_ids, greedy(6))
        run(batcher)
        runs.append(seq.generated)
    assert runs[0] == runs[1] == reference(lm, prompt_ids, 6)
    assert batcher.prefix_cache is not None and batcher.prefix_cache.hits == 47


def test_a_prefix_ending_inside_a_block_reuses_the_block_that_follows_it(lm, tiny_llama):
    """A system prompt of 2.5 blocks: a later prompt loads the two full blocks, then the shared start of
    the earlier prompt's third block (its own turn differs after it), and computes only its own tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    batcher = ContinuousBatcher(lm, tokenizer, max_num_seqs=4, block_size=16)
    shared = [(11 * i) % 170 + 5 for i in range(40)]
    prompts = [
        shared + [30 + i, 31 + i, 32 + i, 33 + i, 34 + i, 35 + i, 36 + i, 37 + i, 38 + i, 39 + i] for i in range(3)
    ]
    seqs = [batcher.add(prompts[0], greedy(6))]
    run(batcher)
    seqs += [batcher.add(p, greedy(6)) for p in prompts[1:]]
    batcher.step()
    assert batcher.prefix_cache is not None and batcher.prefix_cache.hits == 2 * 40
    run(batcher)
    for seq, prompt_ids in zip(seqs, prompts):
        assert seq.generated == reference(lm, prompt_ids, 6)


def test_a_prompt_that_fails_its_forward_fails_alone(lm, tiny_llama):
    """A prompt whose chunk makes the forward pass raise (a token id past the vocabulary, slipped past the
    checks) ends alone with its error; the rows decoding beside it and a prompt prefilled with it go on, with
    the tokens they would have had without it."""
    from transformers import AutoTokenizer

    batcher = ContinuousBatcher(lm, AutoTokenizer.from_pretrained(tiny_llama), max_num_seqs=8)
    prompts = [list(range(5, 20)), list(range(30, 41))]
    first = batcher.add(prompts[0], greedy(8))
    batcher.step()  # the first prompt is prefilled: it decodes from the next step on
    bad = batcher.add(list(range(50, 60)), greedy(8))
    bad.prompt_ids[3] = 10**6  # past the embedding table
    second = batcher.add(prompts[1], greedy(8))
    outputs = batcher.step()  # one step: the first row decodes, both prompts are prefilled, one fails
    failed = [out for out in outputs if out.seq is bad]
    assert failed and failed[0].finished and bad.finish_reason == "error" and "IndexError" in bad.error
    run(batcher)
    for seq, prompt_ids in ((first, prompts[0]), (second, prompts[1])):
        assert seq.finish_reason == "length" and seq.error is None
        assert seq.generated == reference(lm, prompt_ids, 8)


def test_a_row_whose_sampling_fails_fails_alone(lm, tiny_llama):
    """Sampling that raises for one row (a failure injected into the runner's sampler) ends that sequence with
    its error at that step; the other rows of the batch get their tokens."""
    from transformers import AutoTokenizer

    batcher = ContinuousBatcher(lm, AutoTokenizer.from_pretrained(tiny_llama), max_num_seqs=8)
    sample = batcher.runner.sample
    poisoned = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True, top_p=0.5)

    def failing_for_the_poisoned_row(logits, rows):
        if any(row.params is poisoned for row in rows):
            raise RuntimeError("injected sampling failure")
        return sample(logits, rows)

    batcher.runner.sample = failing_for_the_poisoned_row
    prompts = [list(range(5, 20)), list(range(30, 41)), list(range(60, 75))]
    seqs = [batcher.add(prompts[0], greedy(8)), batcher.add(prompts[1], poisoned), batcher.add(prompts[2], greedy(8))]
    run(batcher)
    assert seqs[1].finish_reason == "error" and "injected sampling failure" in seqs[1].error
    assert seqs[1].generated == []
    for seq, prompt_ids in ((seqs[0], prompts[0]), (seqs[2], prompts[2])):
        assert seq.finish_reason == "length" and seq.generated == reference(lm, prompt_ids, 8)


def test_token_ids_outside_the_vocabulary_are_refused_at_add(lm, tiny_llama):
    from transformers import AutoTokenizer

    batcher = ContinuousBatcher(lm, AutoTokenizer.from_pretrained(tiny_llama), max_num_seqs=8)
    for bad in (-5, batcher.runner.vocab_size):
        with pytest.raises(ValueError, match=f"token id {bad}"):
            batcher.add([1, 2, bad], greedy(4))


def test_a_kv_budget_smaller_than_the_load_preempts_and_every_sequence_ends_as_unconstrained(lm, tiny_llama):
    """Twenty sequences whose prompts and answers need about 4x the blocks the budget holds: the newest are preempted
    when decoding runs out of blocks, computed again from their prompt and the tokens they had, and each ends with
    exactly the tokens of a run with room for all (greedy, and a seeded sampler)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    prompts = [[(13 * i + 7 * j) % 400 + 3 for j in range(90 + 3 * i)] for i in range(20)]
    params = [greedy(40) if i % 2 else SamplingParams(max_tokens=40, temperature=0.8, seed=i) for i in range(20)]

    def answers(**options):
        batcher = ContinuousBatcher(lm, tokenizer, max_num_seqs=20, block_size=16, **options)
        seqs = [batcher.add(p, q) for p, q in zip(prompts, params)]
        run(batcher)
        assert all(s.finish_reason == "length" for s in seqs)
        return [s.generated for s in seqs], batcher

    unconstrained, roomy = answers()
    per_block = roomy.runner.block_bytes(16)
    needed = sum(-(-(len(p) + 40) // 16) for p in prompts)  # blocks for every sequence at once
    constrained, tight = answers(kv_cache_bytes=per_block * (needed // 4), prefix_cache_bytes=0)
    assert roomy.preemptions == 0 and tight.preemptions > 0
    assert tight.pool.num_blocks == needed // 4 and tight.pool.used() == 0
    assert constrained == unconstrained


def test_a_prompt_that_could_never_fit_the_budget_is_refused_when_added(lm, tiny_llama):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    probe = ContinuousBatcher(lm, tokenizer, max_num_seqs=2, block_size=16)
    batcher = ContinuousBatcher(lm, tokenizer, block_size=16, kv_cache_bytes=probe.runner.block_bytes(16) * 4)
    assert batcher.context_length == 64
    with pytest.raises(ValueError, match="KV cache holds 64 tokens.*--kv-cache-memory"):
        batcher.add(list(range(3, 80)), greedy(4))
    seq = batcher.add(list(range(3, 40)), greedy(60))  # fits; its answer stops at the budget's context
    run(batcher)
    assert seq.finish_reason == "length" and len(seq.prompt_ids) + len(seq.generated) == 64
    with pytest.raises(ValueError, match="at least"):
        ContinuousBatcher(lm, tokenizer, block_size=16, kv_cache_bytes=10)
