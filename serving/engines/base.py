"""The engine contract: what ``LLMService`` needs from anything that generates tokens.

An engine owns a model (or talks to something that does) and turns token-id prompts into streams of
text. It is driven from one asyncio event loop: ``submit`` and ``abort`` are called on that loop and
return at once; the work happens elsewhere (an engine thread, an engine process, vLLM's core).

A new engine is one module with one class that satisfies ``Engine``; ``serving/engines/thread.py`` is
the smallest example (a flavor's ``Batcher`` stepped on a thread).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional, Protocol

from servelm.flavors.engine import SamplingParams
from servelm.flavors.engine.sample.choice import TokenChoice

#: called after every engine step with the number of sequences it advanced (the batch-size metric)
StepObserver = Callable[[int], None]


@dataclass
class Delta:
    """One piece of a sequence's output as the engine produced it.

    ``completion_tokens`` is the sequence's running total of generated tokens. The last Delta of a
    sequence has ``finished=True`` and a ``finish_reason`` ("stop", "length", "abort"), or an
    ``error`` when the sequence failed (then ``finish_reason`` "error" means the request itself was
    refused, e.g. a prompt too long; anything else is an engine failure).
    """

    text: str
    finished: bool
    finish_reason: Optional[str] = None
    completion_tokens: int = 0
    error: Optional[str] = None
    logprobs: Optional[list[TokenChoice]] = (
        None  # the tokens behind ``text``, when the request asked for log-probabilities
    )
    scheduled_at: Optional[float] = None  # on a sequence's first Delta: wall-clock seconds it got a batch row
    #: the tokens this Delta adds, from an engine that moves token ids only (its ``text`` is then made on the
    #: serving loop, with stop strings: ``requests.RequestTable``)
    token_ids: Optional[list[int]] = None


class RequestStream(Protocol):
    """One submitted sequence's output, read on the loop that submitted it."""

    #: the engine's id of this request
    rid: int

    async def get(self) -> Delta:
        """The next Delta, waiting for it (the last one has ``finished=True``)."""
        ...

    def get_ready(self) -> list[Delta]:
        """Every Delta already produced, without waiting (may be empty): lets a reader that fell
        behind join several steps' text into one chunk."""
        ...


class Engine(Protocol):
    """Generates text for token-id prompts, many at once."""

    #: tokens a sequence may hold, prompt and output together (known once started)
    context_length: int

    async def start(self) -> None:
        """Load the model and start generating; raises what loading raised. Called once, on the serving loop."""
        ...

    async def stop(self) -> None:
        """Stop generating and free the model; open requests end with an error."""
        ...

    def health_error(self) -> Optional[str]:
        """Why the engine cannot serve any more (its process died...), or None while it is healthy."""
        ...

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> RequestStream:
        """Start a sequence; its output arrives on the returned stream."""
        ...

    def abort(self, stream: RequestStream) -> None:
        """Stop a sequence and free its batch row at once (nothing if it already finished). Every
        submitted stream is aborted or read to its end: LLMService aborts in a ``finally``."""
        ...
