"""Dynamic batching for PythonModels that opt in (``max_batch_size``, ``batch_timeout_ms`` attributes).

Concurrent /invocations requests are merged into one predict call on the concatenated rows and the
outputs split back by each request's row count (LitServe-style). Rows come as a list, a numpy array (rows
along its first axis) or a DataFrame, as MLflow's scoring server hands a pyfunc model its input; requests
are merged only with others of the same kind (same dtype and row shape, same columns).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Optional


def batch_key(data: Any) -> Optional[tuple[Any, ...]]:
    """What must match for requests to share a predict call; None when ``data`` has no rows to merge."""
    if isinstance(data, list):
        return ("list",)
    if type(data).__name__ == "ndarray" and getattr(data, "ndim", 0) >= 1:
        return ("ndarray", str(data.dtype), tuple(data.shape[1:]))
    if type(data).__name__ == "DataFrame":
        return ("DataFrame", tuple(str(c) for c in data.columns), tuple(str(t) for t in data.dtypes))
    return None


def _join(parts: list[Any]) -> Any:
    """The requests' rows as one input of their kind."""
    first = parts[0]
    if isinstance(first, list):
        return [row for part in parts for row in part]
    if type(first).__name__ == "ndarray":
        import numpy as np

        return np.concatenate(parts, axis=0)
    import pandas as pd

    return pd.concat(parts, ignore_index=True)


def _rows(output: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a batched output (list, array, Series or DataFrame)."""
    if hasattr(output, "iloc"):
        return output.iloc[start:stop].reset_index(drop=True)
    return output[start:stop]


class DynamicBatcher:
    """Collects requests for up to ``timeout`` seconds or ``max_batch_size`` rows, then predicts once."""

    def __init__(self, predict_batch: Callable[[Any], Awaitable[Any]], max_batch_size: int, timeout: float):
        self.predict_batch = predict_batch
        self.max_batch_size = max_batch_size
        self.timeout = timeout  # seconds
        self._queue: Optional[asyncio.Queue[tuple[Any, asyncio.Future[Any]]]] = None
        self._worker: Optional[asyncio.Task[None]] = None
        self.batch_sizes: list[int] = []  # rows per predict call, most recent last (bounded)

    async def submit(self, rows: Any) -> Any:
        """Predict ``rows`` (a list, array or DataFrame: ``batch_key`` is not None) as part of whatever batch is
        forming; returns this request's outputs."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
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
            groups: dict[Any, list[tuple[Any, asyncio.Future[Any]]]] = {}
            for rows, fut in batch:
                if not fut.cancelled():
                    groups.setdefault(batch_key(rows), []).append((rows, fut))
            for live in groups.values():
                await self._predict(live)

    async def _predict(self, live: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        """One predict call on the requests' joined rows; each request gets its rows of the output."""
        rows_all = _join([rows for rows, _ in live])
        self.batch_sizes = (self.batch_sizes + [len(rows_all)])[-1000:]
        try:
            outputs = await self.predict_batch(rows_all)
            if len(outputs) != len(rows_all):
                raise ValueError(f"batched predict returned {len(outputs)} outputs for {len(rows_all)} rows")
        except Exception as exc:
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            return
        start = 0
        for rows, fut in live:
            if not fut.done():
                fut.set_result(_rows(outputs, start, start + len(rows)))
            start += len(rows)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
