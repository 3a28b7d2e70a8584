"""Incremental detokenization: never half a character, and every decode path agrees with ``tokenizer.decode``."""

import pytest

from servelm.flavors.generation import IncrementalDetokenizer

pytest.importorskip("transformers")


def test_detokenizer_never_splits_characters(tiny_llama):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    text = "héllo wörld 日本語 ok 🙂 done"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tokenizer)
    pieces = [detok.add(i) for i in ids] + [detok.flush()]
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert not any("\ufffd" in p for p in pieces)


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
