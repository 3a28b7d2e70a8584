"""``DynamicBatcher``: concurrent requests merged into one predict call on their concatenated rows and the
outputs split back by row count; then the same through /invocations of a PythonModel that opts in."""

import asyncio
import threading

import httpx
import pytest

from servelm.agents import PythonModel
from servelm.serving.services.dynamic_batching import DynamicBatcher


class Recorder:
    """A batched predict that records the rows of each call (and can be made to fail or miscount)."""

    def __init__(self, fail=None, drop=0):
        self.calls = []
        self.fail = fail
        self.drop = drop

    async def __call__(self, rows):
        self.calls.append(list(rows))
        if self.fail is not None:
            raise self.fail
        out = [r * 10 for r in rows]
        return out[: len(out) - self.drop]


async def test_concurrent_requests_share_one_call_and_get_their_own_rows():
    predict = Recorder()
    batcher = DynamicBatcher(predict, max_batch_size=100, timeout=0.5)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(batcher.submit([1, 2]), batcher.submit([3]), batcher.submit([4, 5, 6])), 10
        )
    finally:
        await batcher.close()
    assert results == [[10, 20], [30], [40, 50, 60]]
    assert predict.calls == [[1, 2, 3, 4, 5, 6]] and batcher.batch_sizes == [6]


async def test_a_full_batch_goes_without_waiting_for_the_timeout():
    predict = Recorder()
    batcher = DynamicBatcher(predict, max_batch_size=4, timeout=3600)  # only the size can end this batch
    try:
        results = await asyncio.wait_for(asyncio.gather(batcher.submit([1, 2]), batcher.submit([3, 4])), 60)
    finally:
        await batcher.close()
    assert results == [[10, 20], [30, 40]] and predict.calls == [[1, 2, 3, 4]]


async def test_a_lone_request_goes_after_the_timeout():
    predict = Recorder()
    batcher = DynamicBatcher(predict, max_batch_size=100, timeout=0.01)
    try:
        assert await asyncio.wait_for(batcher.submit([7]), 60) == [70]
        assert await asyncio.wait_for(batcher.submit([8]), 60) == [80]
    finally:
        await batcher.close()
    assert predict.calls == [[7], [8]] and batcher.batch_sizes == [1, 1]


async def test_a_failed_predict_fails_every_request_of_the_batch_and_the_next_batch_runs():
    predict = Recorder(fail=RuntimeError("model broke"))
    batcher = DynamicBatcher(predict, max_batch_size=3, timeout=3600)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(batcher.submit([1]), batcher.submit([2, 3]), return_exceptions=True), 10
        )
        assert [type(r) for r in results] == [RuntimeError, RuntimeError] and str(results[0]) == "model broke"
        predict.fail = None
        assert await asyncio.wait_for(batcher.submit([1, 2, 3]), 60) == [10, 20, 30]
    finally:
        await batcher.close()


async def test_a_predict_that_miscounts_its_outputs_is_an_error():
    batcher = DynamicBatcher(Recorder(drop=1), max_batch_size=2, timeout=3600)
    try:
        with pytest.raises(ValueError, match="returned 1 outputs for 2 rows"):
            await asyncio.wait_for(batcher.submit([1, 2]), 60)
    finally:
        await batcher.close()


async def test_a_cancelled_request_is_left_out_of_its_batch():
    predict = Recorder()
    batcher = DynamicBatcher(predict, max_batch_size=4, timeout=3600)
    try:
        gone = asyncio.create_task(batcher.submit([1]))
        while batcher._queue is None:  # until its rows are queued (event-loop turns, no wall clock)
            await asyncio.sleep(0)
        gone.cancel()
        assert await asyncio.wait_for(batcher.submit([2, 3, 4]), 60) == [20, 30, 40]
    finally:
        await batcher.close()
    assert gone.cancelled() and predict.calls == [[2, 3, 4]] and batcher.batch_sizes == [3]


class Batched(PythonModel):
    max_batch_size = 16
    batch_timeout_ms = 5000  # the batch fills (16 rows) long before: only a very busy machine waits for it

    def __init__(self):
        self.calls = []

    def predict(self, context, model_input, params=None):
        self.calls.append(len(model_input))
        return [x * 10 for x in model_input]


def test_dynamic_batching_merges_concurrent_requests(serve):
    model = Batched()
    with serve(model) as (base, app):
        results = {}

        def send(i):
            results[i] = httpx.post(f"{base}/invocations", json={"inputs": [i, i + 100]}, timeout=120).json()

        threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    assert all(results[i] == {"predictions": [i * 10, (i + 100) * 10]} for i in range(8))
    assert max(model.calls) > 2 and sum(model.calls) == 16  # several requests ran in one predict call
