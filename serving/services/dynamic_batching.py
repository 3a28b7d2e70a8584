"""Dynamic batching for PythonModels that opt in (``max_batch_size``, ``batch_timeout_ms`` attributes).

Concurrent /invocations requests are merged into one predict call on the concatenated rows and the
outputs split back by each request's row count (LitServe-style).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Optional


class DynamicBatcher:
    """Collects requests for up to ``timeout`` seconds or ``max_batch_size`` rows, then predicts once."""

    def __init__(self, predict_batch: Callable[[list[Any]], Awaitable[list[Any]]], max_batch_size: int, timeout: float):
        self.predict_batch = predict_batch
        self.max_batch_size = max_batch_size
        self.timeout = timeout  # seconds
        self._queue: Optional[asyncio.Queue[tuple[list[Any], asyncio.Future[list[Any]]]]] = None
        self._worker: Optional[asyncio.Task[None]] = None
        self.batch_sizes: list[int] = []  # rows per predict call, most recent last (bounded)

    async def submit(self, rows: list[Any]) -> list[Any]:
        """Predict ``rows`` as part of whatever batch is forming; returns this request's outputs."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        await self._queue.put((rows, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            count = len(batch[0][0])
            deadline = loop.time() + self.timeout
            while count < self.max_batch_size:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
                batch.append(item)
                count += len(item[0])
            live = [(rows, fut) for rows, fut in batch if not fut.cancelled()]
            if not live:
                continue
            rows_all = [row for rows, _ in live for row in rows]
            self.batch_sizes = (self.batch_sizes + [len(rows_all)])[-1000:]
            try:
                outputs = await self.predict_batch(rows_all)
                if len(outputs) != len(rows_all):
                    raise ValueError(f"batched predict returned {len(outputs)} outputs for {len(rows_all)} rows")
            except Exception as exc:
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            start = 0
            for rows, fut in live:
                if not fut.done():
                    fut.set_result(outputs[start : start + len(rows)])
                start += len(rows)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
