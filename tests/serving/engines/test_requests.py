"""The serving loop's side of the thread and process engines: each request's text made from the engine's token
ids, a stop string ending the request and stopping its sequence in the engine."""

import asyncio

import pytest

from servelm.flavors.engine import SamplingParams
from servelm.serving.engines.base import Delta
from servelm.serving.engines.requests import RequestTable

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tokenizer(tiny_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)


def drain(request):
    return request.get_ready()


def test_text_is_made_from_token_ids_and_a_stop_string_stops_the_sequence(tokenizer):
    async def main():
        stopped = []
        table = RequestTable(tokenizer, stopped.append)
        ids = tokenizer("one two three four", add_special_tokens=False)["input_ids"]
        cut = table.new([1, 2], SamplingParams(max_tokens=16, stop=["thr"]))
        whole = table.new([1, 2], SamplingParams(max_tokens=16))
        deltas = [(rid, Delta("", False, None, n + 1, token_ids=[t])) for n, t in enumerate(ids) for rid in (1, 2)]
        table.deliver_here(deltas)
        table.deliver_here([(1, Delta("", True, "length", len(ids), token_ids=[])), (2, Delta("", True, "length", 9))])
        cut_deltas, whole_deltas = drain(cut), drain(whole)
        assert "".join(d.text for d in cut_deltas) == "one two "
        assert cut_deltas[-1].finished and cut_deltas[-1].finish_reason == "stop" and stopped == [cut.rid]
        assert sum(d.finished for d in cut_deltas) == 1  # what the engine produced after the stop string is dropped
        assert "".join(d.text for d in whole_deltas) == "one two three four"
        assert whole_deltas[-1].finish_reason == "length" and stopped == [cut.rid]

    asyncio.run(main())


def test_deltas_handed_over_from_another_thread_are_made_into_text_on_the_loop(tokenizer):
    async def main():
        table = RequestTable(tokenizer, lambda rid: None)
        ids = tokenizer("héllo 🙂", add_special_tokens=False)["input_ids"]
        request = table.new([1], SamplingParams(max_tokens=16))
        deltas = [(request.rid, Delta("", False, None, n + 1, token_ids=[t])) for n, t in enumerate(ids)]
        deltas.append((request.rid, Delta("", True, "stop", len(ids), token_ids=[])))
        await asyncio.to_thread(table.deliver, deltas)
        pieces = []
        while not pieces or not pieces[-1].finished:
            pieces.append(await request.get())
        assert "".join(p.text for p in pieces) == "héllo 🙂" and not any("\ufffd" in p.text for p in pieces)

    asyncio.run(main())
