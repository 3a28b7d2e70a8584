"""Admission control: a bounded running set, a bounded waiting queue, 429 with Retry-After past both;
the gauges and the queue-time histogram follow. Unit tests on the class, then the 429 on a real server
(refused before any response bytes of the request it waits behind)."""

import asyncio

import httpx
import pytest

from servelm.serving.admission import Admission
from servelm.serving.errors import APIError
from servelm.serving.metrics import ServerMetrics


def sample(metrics, name):
    return metrics.registry.get_sample_value(name)


async def until(condition, turns=1000):
    """Yield to the event loop until ``condition()`` holds (no wall-clock waiting)."""
    for _ in range(turns):
        if condition():
            return True
        await asyncio.sleep(0)
    return condition()


async def test_acquire_and_release_count_running():
    metrics = ServerMetrics()
    admission = Admission(2, 0, metrics, metrics.model("m"))
    queued = await admission.acquire()
    assert queued >= 0 and admission.running == 1 and sample(metrics, "servelm_num_requests_running") == 1
    await admission.acquire()
    assert admission.running == 2 and admission.waiting == 0
    admission.release()
    admission.release()
    assert admission.running == 0 and sample(metrics, "servelm_num_requests_running") == 0
    assert sample(metrics, "servelm_request_queue_time_seconds_count") == 2


async def test_past_running_and_queue_is_429_with_retry_after():
    admission = Admission(1, 0, ServerMetrics(), ServerMetrics().model("m"))
    await admission.acquire()
    with pytest.raises(APIError) as info:
        await admission.acquire()
    error = info.value
    assert error.status == 429 and error.code == "server_overloaded" and error.type == "rate_limit_error"
    assert error.headers == {"Retry-After": "1"} and "1 running, 0 waiting" in error.message
    assert admission.running == 1 and admission.waiting == 0  # the refused request took nothing
    admission.release()
    await admission.acquire()  # the slot is free again
    assert admission.running == 1


async def test_a_waiter_queues_until_a_slot_is_released():
    metrics = ServerMetrics()
    admission = Admission(1, 1, metrics, metrics.model("m"))
    await admission.acquire()
    waiter = asyncio.create_task(admission.acquire())
    assert await until(lambda: admission.waiting == 1)
    assert sample(metrics, "servelm_num_requests_waiting") == 1 and not waiter.done()
    with pytest.raises(APIError, match="1 running, 1 waiting"):  # the queue (of one) is full
        await admission.acquire()
    admission.release()
    queued = await asyncio.wait_for(waiter, 60)
    assert queued > 0 and admission.running == 1 and admission.waiting == 0
    assert sample(metrics, "servelm_num_requests_waiting") == 0


async def test_a_cancelled_waiter_leaves_the_queue():
    admission = Admission(1, 1, ServerMetrics(), ServerMetrics().model("m"))
    await admission.acquire()
    waiter = asyncio.create_task(admission.acquire())
    assert await until(lambda: admission.waiting == 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert admission.waiting == 0 and admission.running == 1
    admission.release()
    assert admission.running == 0
    await admission.acquire()  # the cancelled waiter did not keep a slot
    assert admission.running == 1


def test_overload_is_429_before_any_bytes(limited_server, post_chat, chat_body, auth, assert_error, wait_until):
    base, app, _ = limited_server
    body = {"messages": [{"role": "user", "content": "long"}], "stream": True}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, headers=auth, timeout=120) as first:
        assert first.status_code == 200
        lines = first.iter_lines()  # keep a reference: a dropped iterator closes the stream
        next(lines)
        refused = post_chat(base, chat_body)
        assert_error(refused, 429)
        assert refused.headers["retry-after"] == "1"
    wait_until(lambda: not app.state.servelm.admission.running)
    assert app.state.servelm.admission.running == 0
