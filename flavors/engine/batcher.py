"""The batcher contract: what a flavor's scheduler provides so that pyfunc predict and every serving
engine (thread, process) can drive it.

A batcher owns the model and the running batch. Its caller adds sequences, calls ``step`` in a loop
while ``has_work``, reads each ``StepOutput`` (token ids) and aborts sequences whose reader went away or
whose text reached a stop string. It is synchronous and single-threaded: whoever steps it also adds to and
aborts on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol

from .sample.choice import TokenChoice
from .sample.params import SamplingParams


@dataclass
class Sequence:
    """One generation as a batcher tracks it: prompt, parameters, progress (batchers subclass it for their state).

    ``seq_id`` is unique within its batcher; ``generated`` holds the sampled token ids (EOS excluded);
    ``finish_reason`` is set once it ends ("stop" for an end-of-sequence token or a completed grammar,
    "length", "abort" or "error"; then ``error`` says what failed, for this sequence alone). A batcher
    moves token ids only: text and stop strings are its reader's (``generation.SequenceText``).
    """

    prompt_ids: list[int]
    params: SamplingParams
    seq_id: int = 0
    generated: list[int] = field(default_factory=list)
    finish_reason: Optional[str] = None
    aborted: bool = False
    error: Optional[str] = None  # why the sequence failed, when finish_reason is "error"
    scheduled_at: Optional[float] = None  # wall-clock seconds it was given a batch row (its queue time ends)


@dataclass
class StepOutput:
    """What one step produced for one sequence: the tokens it added to the answer (none for an
    end-of-sequence token), whether it finished, and the token it sampled with its log-probabilities when
    the sequence asked for them."""

    seq: Sequence
    token_ids: list[int]
    finished: bool
    choice: Optional[TokenChoice] = None


class Batcher(Protocol):
    """A scheduler over one model: sequences join and leave a running batch between steps."""

    #: tokens a sequence may hold, prompt and output together
    context_length: int
    #: sequences the last ``step`` advanced (for the batch-size metric)
    last_batch_size: int

    def add(self, prompt_ids: list[int], params: SamplingParams) -> Sequence:
        """Queue a sequence; it joins the batch at a later step. Raises ValueError when it can never
        run (an empty prompt, one longer than the context), with a message for the client."""
        ...

    def abort(self, seq: Sequence) -> None:
        """Stop ``seq``: it produces no more output and its KV blocks are freed by the next step."""
        ...

    def step(self) -> list[StepOutput]:
        """Advance every running sequence by one token (prefilling newcomers first); one output per
        sequence that produced a token or finished. A finished sequence appears once, with finished=True."""
        ...

    def has_work(self) -> bool:
        """Whether any sequence is waiting or running (aborted ones count until they are freed)."""
        ...

    def idle(self) -> None:
        """Free memory kept for running sequences (a KV cache) while none is left; called by an engine
        after ``IDLE_SECONDS`` without work, so back-to-back bursts reuse it."""
        ...
