"""A sequence's text made from its token ids: the same text as decoding them whole, cut at a stop string."""

import pytest

from servelm.flavors.generation import SequenceText

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tokenizer(tiny_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)


def test_text_is_the_decoded_ids_step_by_step(tokenizer):
    ids = tokenizer("héllo wörld 日本語 ok 🙂 done", add_special_tokens=False)["input_ids"]
    out = SequenceText(tokenizer)
    pieces = [out.add([i]) for i in ids] + [out.finish()]
    assert "".join(pieces) == out.text == tokenizer.decode(ids) and not out.stopped


def test_a_stop_string_cuts_the_text_and_nothing_follows(tokenizer):
    ids = tokenizer("one two three four five", add_special_tokens=False)["input_ids"]
    out = SequenceText(tokenizer, ["thr", "nope"])
    text = "".join(out.add(ids[i : i + 2]) for i in range(0, len(ids), 2))  # several tokens per Delta
    assert out.stopped and text == out.text == "one two "
    assert out.add(ids) == "" and out.finish() == "" and out.text == "one two "


def test_text_that_could_begin_a_stop_string_waits_then_comes_at_the_end(tokenizer):
    ids = tokenizer("a b c", add_special_tokens=False)["input_ids"]
    out = SequenceText(tokenizer, ["c d"])
    streamed = "".join(out.add([i]) for i in ids)
    assert not streamed.endswith("c") and streamed + out.finish() == "a b c" and not out.stopped
