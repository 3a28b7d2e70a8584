"""Async load generator for any OpenAI-compatible (or MLflow /invocations) endpoint.

    python benchmarks/serve.py --url http://127.0.0.1:8000 --model NAME --concurrency 1,8,32 \
        --requests 500 [--path /v1/chat/completions] [--stream] --out FILE.json

Each concurrency level runs a warm-up (one request per client), then ``--requests`` requests from that
many concurrent clients. Reports requests/s, end-to-end latency (mean, p50, p99) in seconds, failures,
and for ``--stream`` the time to first content chunk. Fixed prompt; no timing asserts anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import httpx


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


async def one_request(client: httpx.AsyncClient, url: str, body: dict[str, Any], stream: bool) -> tuple[bool, float, float]:
    """(ok, end-to-end seconds, first-chunk seconds) of one request."""
    start = time.perf_counter()
    first = float("nan")
    try:
        if stream:
            async with client.stream("POST", url, json=body) as resp:
                if resp.status_code != 200:
                    return False, time.perf_counter() - start, first
                async for line in resp.aiter_lines():
                    if line.startswith("data:") and first != first:
                        first = time.perf_counter() - start
            return True, time.perf_counter() - start, first
        resp = await client.post(url, json=body)
        return resp.status_code == 200, time.perf_counter() - start, first
    except httpx.HTTPError:
        return False, time.perf_counter() - start, first


async def run_level(url: str, body: dict[str, Any], concurrency: int, requests: int, stream: bool) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await asyncio.gather(*(one_request(client, url, body, stream) for _ in range(concurrency)))  # warm-up
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(requests):
            queue.put_nowait(i)
        results: list[tuple[bool, float, float]] = []

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                results.append(await one_request(client, url, body, stream))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start  # seconds
    ok = [r for r in results if r[0]]
    latencies = [r[1] for r in ok]
    firsts = [r[2] for r in ok if r[2] == r[2]]
    row = {"concurrency": concurrency, "requests": len(results), "failures": len(results) - len(ok), "duration_s": round(elapsed, 3),
           "request_throughput": round(len(ok) / elapsed, 1), "e2e_mean_s": round(statistics.mean(latencies), 5) if latencies else None,
           "e2e_p50_s": round(percentile(latencies, 0.5), 5), "e2e_p99_s": round(percentile(latencies, 0.99), 5)}
    if stream:
        row.update({"ttft_p50_s": round(percentile(firsts, 0.5), 5), "ttft_p99_s": round(percentile(firsts, 0.99), 5)})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", default=None, help="model name to send")
    parser.add_argument("--path", default="/v1/chat/completions", help="route to load (/v1/chat/completions or /invocations)")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--label", default="", help="system name recorded with the results")
    parser.add_argument("--out", help="append results as JSON lines to this file")
    args = parser.parse_args()
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "Say hello to the benchmark."}]}
    if args.path != "/invocations":  # an MLflow ChatAgent's /invocations signature refuses extra fields
        body["max_tokens"] = args.max_tokens
        if args.model:
            body["model"] = args.model
    if args.stream:
        body["stream"] = True
    for level in (int(c) for c in args.concurrency.split(",")):
        row = asyncio.run(run_level(args.url.rstrip("/") + args.path, body, level, args.requests, args.stream))
        row["system"] = args.label
        print(json.dumps(row))
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
