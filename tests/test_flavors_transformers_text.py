"""Incremental detokenization and stop strings."""

import pytest

from servelm.flavors.generation import StopChecker
from servelm.flavors.generation import IncrementalDetokenizer


def test_detokenizer_never_splits_characters(tiny_llama):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    text = "héllo wörld 日本語 ok 🙂 done"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tokenizer)
    pieces = [detok.add(i) for i in ids] + [detok.flush()]
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert not any("\ufffd" in p for p in pieces)


@pytest.mark.parametrize(
    "deltas, stops, emitted, hit",
    [
        (["hel", "lo wo", "rld"], ["wor"], "hello ", True),
        (["ab", "c", "de"], ["cd"], "ab", True),
        (["a", "b"], ["xyz"], "ab", False),
        (["no stop ", "here"], [], "no stop here", False),
        (["tail <", "/s"], ["</s>"], "tail ", False),
    ],
)
def test_stop_strings(deltas, stops, emitted, hit):
    checker = StopChecker(stops)
    out, stopped = "", False
    for delta in deltas:
        text, stopped = checker.feed(delta)
        out += text
        if stopped:
            break
    if not stopped and deltas[-1] == "/s":
        assert out == emitted  # "<" and "/s" held back: they may begin "</s>"
        out += checker.flush()
        assert out == "tail </s"
        return
    if not stopped:
        out += checker.flush()
    assert (out, stopped) == (emitted, hit)


def test_detokenizer_paths_agree_with_decode(tiny_llama):
    """The DecodeStream path, the two-window path and ``tokenizer.decode`` give the same text, token for
    token, over random ids (special tokens and broken characters included)."""
    import random

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    rng = random.Random(7)
    for _ in range(20):
        ids = [rng.randrange(len(tokenizer)) for _ in range(40)]
        fast, slow = IncrementalDetokenizer(tokenizer), IncrementalDetokenizer(tokenizer)
        slow._backend = slow._stream = None  # the fallback for tokenizers without a Rust backend
        fast_text = "".join(fast.add(i) for i in ids) + fast.flush()
        slow_text = "".join(slow.add(i) for i in ids) + slow.flush()
        assert fast_text == slow_text == tokenizer.decode(ids, skip_special_tokens=True)
