"""Reading an engine's streams: whole outputs, pieces joined when the reader falls behind, errors as
APIErrors, and every stream aborted when the reader stops, finished or not."""

import asyncio

import pytest

from servelm.serving.engines.base import Delta
from servelm.serving.errors import APIError
from servelm.serving.services.llm_streams import collect, pieces


class ListedStream:
    """A RequestStream over Deltas known in advance (all of them ready at once)."""

    def __init__(self, rid, deltas):
        self.rid = rid
        self.deltas = list(deltas)

    async def get(self):
        while not self.deltas:
            await asyncio.sleep(3600)  # an unfinished stream: the reader waits until cancelled
        return self.deltas.pop(0)

    def get_ready(self):
        ready, self.deltas = self.deltas, []
        return ready


class Aborts:
    """The one Engine method the readers call."""

    def __init__(self):
        self.aborted = []

    def abort(self, stream):
        self.aborted.append(stream.rid)


def words(*texts, reason="stop"):
    return [Delta(t, False) for t in texts[:-1]] + [Delta(texts[-1], True, reason, len(texts))]


def test_collect_gives_each_choice_whole():
    engine = Aborts()
    streams = [ListedStream(1, words("a", "b")), ListedStream(2, words("c", "d", "e", reason="length"))]
    results = asyncio.run(collect(engine, streams))
    assert [(text, final.finish_reason, final.completion_tokens) for text, final, _ in results] == [
        ("ab", "stop", 2),
        ("cde", "length", 3),
    ]
    assert engine.aborted == [1, 2]


def test_pieces_join_what_is_waiting():
    async def read():
        return [p async for p in pieces(Aborts(), [ListedStream(1, words("x", "y", "z"))])]

    (piece,) = asyncio.run(read())
    assert (piece.text, piece.finished, piece.tokens) == ("xyz", True, 3)


def test_an_engine_error_is_an_api_error():
    refused = [Delta("", True, "error", 0, "the prompt is too long")]
    with pytest.raises(APIError) as caught:
        asyncio.run(collect(Aborts(), [ListedStream(1, refused)]))
    assert caught.value.status == 400


def test_a_reader_that_stops_early_aborts_every_stream():
    engine = Aborts()

    async def read_one():
        generated = pieces(engine, [ListedStream(1, [Delta("a", False)]), ListedStream(2, [Delta("b", False)])])
        first = await generated.__anext__()
        await generated.aclose()
        return first

    assert asyncio.run(read_one()).text in ("a", "b")
    assert sorted(engine.aborted) == [1, 2]
