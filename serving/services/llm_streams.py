"""Reading an engine's streams for one request: every choice's whole output (``collect``), or its pieces
as they are generated (``pieces``). The streams are aborted whenever the reader stops, finished or not,
so a client that goes away frees its engine rows at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, NamedTuple, Optional

from servelm.flavors.engine.sample.choice import TokenChoice

from ..engines.base import Delta, Engine, RequestStream
from ..errors import APIError
from .llm_timing import GenerationClock


class Piece(NamedTuple):
    """Output of one choice as it streams; ``choice`` -1 ends the stream (``tokens`` = prompt tokens)."""

    choice: int
    text: str
    finished: bool
    finish_reason: Optional[str]
    tokens: int  # the choice's completion tokens, on its last piece
    logprobs: Optional[list[TokenChoice]]


async def collect(
    engine: Engine, submitted: list[RequestStream], clock: Optional[GenerationClock] = None
) -> list[tuple[str, Delta, list[TokenChoice]]]:
    """Each choice's whole text, last Delta and token log-probabilities (``clock`` told of each Delta)."""
    texts: list[list[str]] = [[] for _ in submitted]
    logprobs: list[list[TokenChoice]] = [[] for _ in submitted]
    finals: list[Delta] = [Delta("", False)] * len(submitted)

    async def read(i: int, stream: RequestStream) -> None:
        while True:
            delta = await stream.get()
            if delta.error:
                raise engine_error(delta)
            if clock is not None:
                clock.produced(i)
            texts[i].append(delta.text)
            logprobs[i] += delta.logprobs or []
            if delta.finished:
                finals[i] = delta
                return

    try:
        if len(submitted) == 1:
            await read(0, submitted[0])
        else:  # the choices' streams are read together (an engine may produce only as they are read)
            await asyncio.gather(*(read(i, stream) for i, stream in enumerate(submitted)))
    finally:
        for stream in submitted:
            engine.abort(stream)
    return [("".join(t), final, lp) for t, final, lp in zip(texts, finals, logprobs)]


async def pieces(
    engine: Engine, submitted: list[RequestStream], clock: Optional[GenerationClock] = None
) -> AsyncGenerator[Piece, None]:
    """Each choice's output as generated, until every choice has finished. When the reader is slower than
    the engine, the deltas waiting for a choice come out joined (as vLLM does), so a busy server spends
    its time generating rather than framing one event per token."""
    merged: asyncio.Queue[tuple[int, Delta]] = asyncio.Queue()
    pumps: list[asyncio.Task[None]] = []
    if len(submitted) > 1:
        pumps = [asyncio.get_running_loop().create_task(_pump(i, stream, merged)) for i, stream in enumerate(submitted)]
    open_choices = len(submitted)
    try:
        while open_choices:
            if pumps:
                ready = [await merged.get()]
                while not merged.empty():
                    ready.append(merged.get_nowait())
            else:
                ready = [(0, delta) for delta in [await submitted[0].get(), *submitted[0].get_ready()]]
            if clock is not None:
                for index, _ in ready:
                    clock.produced(index)
            for piece in _coalesce(ready):
                if piece.finished:
                    open_choices -= 1
                if piece.text or piece.finished or piece.logprobs:
                    yield piece
    finally:
        for pump in pumps:
            pump.cancel()
        for stream in submitted:
            engine.abort(stream)


def engine_error(delta: Delta) -> APIError:
    """A failed sequence as an APIError: refused by the engine (400) or broken in it (500)."""
    if delta.finish_reason == "error":
        return APIError(400, delta.error or "the engine refused the request", code="invalid_request")
    return APIError(500, delta.error or "the engine failed", code="engine_error")


async def _pump(index: int, stream: RequestStream, merged: asyncio.Queue[tuple[int, Delta]]) -> None:
    while True:
        delta = await stream.get()
        merged.put_nowait((index, delta))
        if delta.finished:
            return


def _coalesce(ready: list[tuple[int, Delta]]) -> list[Piece]:
    """Join the waiting deltas of each choice, in order of each choice's first delta. An error stops
    everything (raised as an APIError)."""
    joined: dict[int, list[Any]] = {}
    for index, delta in ready:
        if delta.error:
            raise engine_error(delta)
        entry = joined.setdefault(index, [[], False, None, 0, None])
        entry[0].append(delta.text)
        if delta.logprobs:
            entry[4] = (entry[4] or []) + delta.logprobs
        if delta.finished:
            entry[1], entry[2], entry[3] = True, delta.finish_reason, delta.completion_tokens
    return [
        Piece(index, "".join(texts), finished, reason, tokens, logprobs)
        for index, (texts, finished, reason, tokens, logprobs) in joined.items()
    ]
