"""OpenAI ``stop`` strings applied to streamed text."""

from __future__ import annotations

from typing import Optional


class StopChecker:
    """Applies OpenAI ``stop`` strings to streamed text: text that may begin a stop string is held back
    until it is known not to; a match ends the output before the stop string."""

    def __init__(self, stops: Optional[list[str]]):
        self.stops = [s for s in (stops or []) if s]
        self.longest = max((len(s) for s in self.stops), default=0)
        self.text = ""
        self.sent = 0

    def feed(self, delta: str) -> tuple[str, bool]:
        """Add generated text; return (text safe to emit now, whether a stop string was hit)."""
        if not self.stops:
            self.text += delta
            self.sent = len(self.text)
            return delta, False
        start = max(0, self.sent - self.longest + 1)
        self.text += delta
        hit = -1
        for stop in self.stops:
            i = self.text.find(stop, start)
            if i != -1 and (hit == -1 or i < hit):
                hit = i
        if hit != -1:
            out = self.text[self.sent : hit]
            self.text = self.text[:hit]
            self.sent = hit
            return out, True
        hold = self._partial_suffix()
        end = len(self.text) - hold
        out = self.text[self.sent : end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return out, False

    def flush(self) -> str:
        """The held-back tail, at the end of generation."""
        out = self.text[self.sent :]
        self.sent = len(self.text)
        return out

    def _partial_suffix(self) -> int:
        """Length of the longest end of the text that is a proper prefix of some stop string."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.text)), best, -1):
                if self.text.endswith(stop[:n]):
                    best = n
                    break
        return best
