"""One sequence's output as its reader sees it: token ids turned into text, with OpenAI stop strings.

Engines move token ids only; the text is made where it is read (the serving process's event loop, or a
predict call), as vLLM's output processor does, so an engine's step never waits on detokenizing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Optional

from .detokenizer import IncrementalDetokenizer
from .stop import StopChecker


class SequenceText:
    """Token ids in, text out, a step at a time: never half a character, and nothing from a stop string on.

    ``stopped`` turns true when a stop string ends the text; the reader then stops the sequence (its engine
    does not look for stop strings) and ignores any token it produced meanwhile.
    """

    def __init__(self, tokenizer: Any, stop: Optional[list[str]] = None):
        self.detokenizer = IncrementalDetokenizer(tokenizer)
        self.stopper = StopChecker(stop)
        self.text = ""  # everything emitted so far
        self.stopped = False

    def add(self, token_ids: Iterable[int]) -> str:
        """The new text ``token_ids`` complete ('' while a character or a possible stop string is incomplete)."""
        if self.stopped:
            return ""
        out = []
        for token in token_ids:
            piece, hit = self.stopper.feed(self.detokenizer.add(token))
            out.append(piece)
            if hit:
                self.stopped = True
                break
        text = "".join(out)
        self.text += text
        return text

    def step(self, token_ids: Iterable[int], last: bool) -> tuple[str, bool]:
        """The text one step's tokens add, and whether a stop string ended the text in them; when they are the
        sequence's ``last`` (and no stop string came first), the text held back too."""
        text = self.add(token_ids)
        if self.stopped:
            return text, True
        return (text + self.finish() if last else text), False

    def finish(self) -> str:
        """The text still held back when the sequence ends (a character never completed, text that could
        have begun a stop string)."""
        if self.stopped:
            return ""
        tail, hit = self.stopper.feed(self.detokenizer.flush())
        if hit:
            self.stopped = True
        else:
            tail += self.stopper.flush()
        self.text += tail
        return tail
