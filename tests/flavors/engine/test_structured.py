"""Grammar-constrained decoding: every output follows its grammar (even from a random model), a grammar
is compiled once per batcher and copied after, bad grammars are named before generating."""

import json

import pytest

pytest.importorskip("llguidance")

from servelm.flavors.engine import SamplingParams  # noqa: E402
from servelm.flavors.engine.sample.params import GuidedDecoding  # noqa: E402
from servelm.flavors.engine.structured import check_grammar  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer"},
        "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["city", "days", "ok", "tags"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def batcher_of(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from servelm.flavors.engine.hf_batcher import ContinuousBatcher

    model, tokenizer = (
        AutoModelForCausalLM.from_pretrained(tiny_llama).eval(),
        AutoTokenizer.from_pretrained(tiny_llama),
    )
    return lambda: ContinuousBatcher(model, tokenizer, max_num_seqs=8), tokenizer


def decoded(tokenizer, seq):
    """A sequence's answer as text (the batcher moves token ids)."""
    return tokenizer.decode(seq.generated, skip_special_tokens=True)


def run(batcher, prompt, params_list):
    seqs = [batcher.add(prompt, params) for params in params_list]
    while batcher.has_work():
        batcher.step()
    return seqs


def test_json_schema_output_always_parses_and_validates(batcher_of):
    make, tokenizer = batcher_of
    batcher = make()
    guided = GuidedDecoding("json_schema", json.dumps(SCHEMA))
    params = [
        SamplingParams(max_tokens=m, temperature=t, seed=s, guided=guided)
        for m, t, s in ((80, 0, None), (120, 1.0, 3), (200, 1.2, 4), (60, 1.0, 5))
    ]
    free = SamplingParams(max_tokens=20, temperature=0)
    seqs = run(batcher, tokenizer("hello world")["input_ids"], params + [free])
    for seq in seqs[:-1]:
        value = json.loads(decoded(tokenizer, seq))
        assert seq.finish_reason == "stop" and set(value) == set(SCHEMA["properties"]), decoded(tokenizer, seq)
        assert isinstance(value["city"], str) and isinstance(value["days"], int) and isinstance(value["ok"], bool)
        assert all(isinstance(t, str) for t in value["tags"])
    assert seqs[-1].finish_reason == "length"  # the free row beside them is not constrained
    assert batcher.grammars().compiled == 1  # one grammar, compiled once, copied for each sequence


def test_json_object_and_regex(batcher_of):
    make, tokenizer = batcher_of
    batcher = make()
    obj, code = run(
        batcher,
        tokenizer("hello")["input_ids"],
        [
            SamplingParams(max_tokens=60, temperature=1.0, seed=1, guided=GuidedDecoding("json_object")),
            SamplingParams(max_tokens=20, temperature=1.0, seed=1, guided=GuidedDecoding("regex", "[A-Z]{3}-[0-9]{2}")),
        ],
    )
    assert isinstance(json.loads(decoded(tokenizer, obj)), dict)
    code_text = decoded(tokenizer, code)
    assert (
        len(code_text) == 6
        and code_text[:3].isupper()
        and code_text[3] == "-"
        and code_text[4:].isdigit()
        and code.finish_reason == "stop"
    )


def test_a_second_request_with_the_same_schema_compiles_nothing(batcher_of):
    make, tokenizer = batcher_of
    batcher = make()
    guided = GuidedDecoding("json_schema", json.dumps(SCHEMA))
    run(batcher, tokenizer("a")["input_ids"], [SamplingParams(max_tokens=80, temperature=0, guided=guided)])
    run(batcher, tokenizer("b")["input_ids"], [SamplingParams(max_tokens=80, temperature=0, guided=guided)])
    assert batcher.grammars().compiled == 1


def test_bad_grammars_are_named():
    assert check_grammar(GuidedDecoding("json_schema", json.dumps({"type": "objectx"}))) is not None
    assert "regex" in check_grammar(GuidedDecoding("regex", "[a-z"))
    assert check_grammar(GuidedDecoding("json_schema", json.dumps(SCHEMA))) is None


def test_a_grammar_past_its_limits_fails_its_row_alone(batcher_of):
    """A pattern whose lexer would take hundreds of MB (``(x{1000}){1000}``) stops at the lexer-state cap: its
    sequence ends with the grammar's error, not with a silently cut answer, and the row beside it goes on."""
    make, tokenizer = batcher_of
    batcher = make()
    schema = {
        "type": "object",
        "properties": {"k": {"type": "string", "pattern": "^(x{1000}){1000}$"}},
        "required": ["k"],
    }
    evil = SamplingParams(max_tokens=60, temperature=0, guided=GuidedDecoding("json_schema", json.dumps(schema)))
    free = SamplingParams(max_tokens=30, temperature=0, ignore_eos=True)
    bad, good = run(batcher, tokenizer("hello")["input_ids"], [evil, free])
    assert bad.finish_reason == "error" and "output grammar failed" in bad.error, (decoded(tokenizer, bad), bad.error)
    assert good.finish_reason == "length" and len(good.generated) == 30 and good.error is None


def test_the_grammar_cache_is_bounded_in_bytes(batcher_of):
    """What computing a grammar's masks grows the heap by is charged to it: past the cache's bytes the least
    recently used grammar goes (and is compiled again when asked for)."""
    from servelm.flavors.engine.structured import heap_bytes

    if not heap_bytes():
        pytest.skip("this C library does not report its heap (glibc's mallinfo2)")
    make, tokenizer = batcher_of
    batcher = make()
    grammars = batcher.grammars()
    grammars.max_bytes = 1  # any grammar's lexer is over it
    guided = GuidedDecoding("json_schema", json.dumps(SCHEMA))
    for prompt in ("a", "b"):
        run(batcher, tokenizer(prompt)["input_ids"], [SamplingParams(max_tokens=40, temperature=0, guided=guided)])
    assert grammars.compiled == 2 and grammars.bytes <= 1
