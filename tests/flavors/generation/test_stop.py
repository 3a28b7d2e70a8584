"""OpenAI stop strings on streamed text: cut at the first match, text that may begin one held back."""

import pytest

from servelm.flavors.generation import StopChecker


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
