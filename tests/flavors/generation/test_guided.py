"""Grammar-constrained decoding: every output follows its grammar (even from a random model), a grammar
is compiled once per batcher and copied after, bad grammars are named before generating."""

import json

import pytest

pytest.importorskip("llguidance")

from servelm.flavors.generation import SamplingParams  # noqa: E402
from servelm.flavors.generation.guided import check_grammar  # noqa: E402
from servelm.flavors.generation.sampling import GuidedDecoding  # noqa: E402

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

    from servelm.flavors.transformers.batcher import ContinuousBatcher

    model, tokenizer = (
        AutoModelForCausalLM.from_pretrained(tiny_llama).eval(),
        AutoTokenizer.from_pretrained(tiny_llama),
    )
    return lambda: ContinuousBatcher(model, tokenizer, max_num_seqs=8), tokenizer


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
        value = json.loads(seq.text)
        assert seq.finish_reason == "stop" and set(value) == set(SCHEMA["properties"]), seq.text
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
    assert isinstance(json.loads(obj.text), dict)
    assert (
        len(code.text) == 6
        and code.text[:3].isupper()
        and code.text[3] == "-"
        and code.text[4:].isdigit()
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
