"""Async load generator for any OpenAI-compatible server (or MLflow /invocations).

    python benchmarks/serve.py --url http://127.0.0.1:8000 --model NAME --concurrency 1,8,32,64 \
        --requests 128 --max-tokens 32 [--stream] [--ignore-eos] [--label NAME] --out FILE.jsonl

The client is aiohttp (httpx's own overhead capped a 2-core machine before the servers did). Metrics as vLLM's
``bench serve`` defines them: TTFT (first chunk with content), TPOT per request
((e2e - ttft) / (output tokens - 1)), ITL pooled over all gaps between content chunks, end-to-end latency;
mean, p50 and p99 (seconds); request/s and output tokens/s (from the server's usage counts). Each level
warms up with one request per client first.

Workloads (``--workload``): ``fixed`` sends one short prompt every time; ``real`` a distinct prompt of
about 250 tokens per request; ``long`` distinct prompts of about 1500 tokens; ``agent`` a shared system
prompt of about 1000 tokens followed by a short distinct user turn (what an agent framework sends);
``unshared`` the same shape with a distinct system prompt per request (the agent point's baseline).
Prompts are made of common words drawn from a generator seeded by the workload, ``--salt`` and the
request's index: distinct from their first word, and distinct between runs with different salts (a
server's prefix cache must not carry one level's prompts into the next).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import aiohttp

PROMPT = "Write a short story about a small model server that answers many questions at once."
WORKLOADS = ("fixed", "real", "long", "agent", "unshared")
_WORDS = (
    "time year people way day man thing woman life child world school state family student group country problem hand "
    "part place case week company system program question work government number night point home water room mother "
    "area money story fact month lot right study book eye job word business issue side kind head house service friend "
    "father power hour game line end member law car city community name president team minute idea kid body "
    "information back parent face others level office door health person art war history party result change morning "
    "reason research girl guy moment air teacher force education foot boy age policy music market sense nation plan "
    "college interest death experience effect use class control care field development role effort rate heart drug "
    "show leader light voice wife police mind price report decision son view relationship town road arm difference "
    "value building action model season society tax director position player record paper space ground form event "
    "official matter center couple site project activity star table need court american oil situation cost industry "
    "figure street image phone data picture practice piece land product doctor wall patient worker news test movie "
    "north love support technology step baby computer type attention film tree source organization hair window "
    "evidence population site small large new old good great high different important public bad same able local sure "
    "free better best early young"
).split()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def workload_messages(workload: str, index: int, salt: str = "") -> list[dict[str, str]]:
    """The chat messages of request ``index`` of a workload (distinct per index and salt, reproducible)."""
    if workload == "fixed":
        return [{"role": "user", "content": PROMPT}]
    rng = random.Random(f"{workload}-{salt}-{index}")
    if workload == "real":
        return [{"role": "user", "content": f"Summarize this in one sentence: {_text(rng, 213)}"}]
    if workload == "long":
        return [{"role": "user", "content": f"Summarize this in one sentence: {_text(rng, 1460)}"}]
    if workload in ("agent", "unshared"):
        notes = random.Random("agent-system-prompt") if workload == "agent" else rng
        system = "You are a helpful assistant for a logistics company. Follow these notes: " + _text(notes, 950)
        return [
            {"role": "system", "content": system},
            {"role": "user", "content": f"Question {index}: {_text(rng, 12)}?"},
        ]
    raise ValueError(f"unknown workload {workload!r}; choose one of {', '.join(WORKLOADS)}")


@dataclass
class Result:
    ok: bool
    e2e: float = 0.0  # seconds
    ttft: Optional[float] = None  # seconds
    gaps: list[float] = field(default_factory=list)  # seconds between content chunks
    output_tokens: int = 0
    prompt_tokens: int = 0


def percentile(values: list[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def _content_of(payload: dict[str, Any]) -> str:
    choices = payload.get("choices") or []
    if choices and isinstance(choices[0], dict):
        return (choices[0].get("delta") or {}).get("content") or ""
    delta = payload.get("delta")
    return (delta.get("content") or "") if isinstance(delta, dict) else ""


async def one_request(session: aiohttp.ClientSession, url: str, body: dict[str, Any], stream: bool) -> Result:
    """Send one request; time its content chunks and read its usage."""
    start = time.perf_counter()
    try:
        async with session.post(url, json=body) as resp:
            if resp.status != 200:
                await resp.read()
                return Result(False, time.perf_counter() - start)
            if not stream:
                payload = await resp.json()
                if isinstance(payload, dict) and "predictions" in payload:  # MLflow's wrapped /invocations reply
                    payload = payload["predictions"]
                if isinstance(payload, list):  # MLflow's transformers chat model answers a list of one response
                    payload = payload[0] if payload else {}
                usage = (payload.get("usage") if isinstance(payload, dict) else None) or {}
                return Result(True, time.perf_counter() - start, output_tokens=int(usage.get("completion_tokens", 0)))
            result = Result(True)
            last = None
            async for raw in resp.content:  # one SSE line at a time
                line = raw.decode().strip()
                if not line.startswith("data:") or line.endswith("[DONE]"):
                    continue
                payload = json.loads(line[5:])
                if payload.get("usage"):
                    result.output_tokens = int(payload["usage"].get("completion_tokens", 0))
                    result.prompt_tokens = int(payload["usage"].get("prompt_tokens", 0))
                if _content_of(payload):
                    now = time.perf_counter()
                    if result.ttft is None:
                        result.ttft = now - start
                    else:
                        result.gaps.append(now - (last or now))
                    last = now
        result.e2e = time.perf_counter() - start
        return result
    except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError):
        return Result(False, time.perf_counter() - start)


def _stats(prefix: str, values: list[float]) -> dict[str, Optional[float]]:
    if not values:
        return {f"{prefix}_mean_s": None, f"{prefix}_p50_s": None, f"{prefix}_p99_s": None}
    return {
        f"{prefix}_mean_s": round(statistics.mean(values), 5),
        f"{prefix}_p50_s": round(percentile(values, 0.5) or 0, 5),
        f"{prefix}_p99_s": round(percentile(values, 0.99) or 0, 5),
    }


async def run_level(
    url: str,
    body: dict[str, Any],
    concurrency: int,
    requests: int,
    stream: bool,
    workload: str = "fixed",
    salt: str = "",
    fresh_connections: bool = False,
) -> dict[str, Any]:
    """``requests`` requests from ``concurrency`` clients (after a warm-up); one result row. ``fresh_connections``:
    a new connection per request (for servers that close a kept-alive connection after a stream without saying
    so, as llama.cpp's does: a reused one fails)."""
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=fresh_connections)

    def body_for(index: int) -> dict[str, Any]:
        return (
            body
            if workload == "fixed" or "messages" not in body
            else {**body, "messages": workload_messages(workload, index, salt)}
        )

    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=3600)) as client:
        await asyncio.gather(*(one_request(client, url, body_for(-1 - i), stream) for i in range(concurrency)))
        todo = list(range(requests))
        results: list[Result] = []

        async def worker() -> None:
            while todo:
                index = todo.pop()
                results.append(await one_request(client, url, body_for(index), stream))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        duration = time.perf_counter() - start  # seconds
    ok = [r for r in results if r.ok]
    tokens = sum(r.output_tokens for r in ok)
    row: dict[str, Any] = {
        "concurrency": concurrency,
        "requests": len(results),
        "failures": len(results) - len(ok),
        "duration_s": round(duration, 3),
        "request_throughput": round(len(ok) / duration, 2),
        "output_tokens": tokens,
        "output_throughput": round(tokens / duration, 1),
        "workload": workload,
        "prompt_tokens_mean": round(statistics.mean(r.prompt_tokens for r in ok), 1) if ok else None,
    }
    row.update(_stats("e2e", [r.e2e for r in ok]))
    if stream:
        row.update(_stats("ttft", [r.ttft for r in ok if r.ttft is not None]))
        row.update(
            _stats(
                "tpot",
                [(r.e2e - r.ttft) / (r.output_tokens - 1) for r in ok if r.ttft is not None and r.output_tokens > 1],
            )
        )
        row.update(_stats("itl", [g for r in ok for g in r.gaps]))
    return row


def request_body(path: str, model: Optional[str], max_tokens: int, stream: bool, ignore_eos: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": PROMPT}]}
    if path != "/invocations":  # an MLflow ChatAgent's /invocations signature refuses extra fields
        body.update(max_tokens=max_tokens, temperature=0.0)
        if model:
            body["model"] = model
        if ignore_eos:
            body["ignore_eos"] = True  # vLLM's extension, honoured by servelm too: every request yields max_tokens
        if stream:
            body["stream_options"] = {"include_usage": True}
    if stream:
        body["stream"] = True
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", default=None, help="model name to send")
    parser.add_argument(
        "--path", default="/v1/chat/completions", help="route to load (/v1/chat/completions or /invocations)"
    )
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--requests", type=int, default=128, help="requests per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--ignore-eos", action="store_true", help="ask for exactly max_tokens per request")
    parser.add_argument("--body", help="send this JSON body as is (instead of building one from the flags above)")
    parser.add_argument(
        "--workload",
        default="fixed",
        choices=WORKLOADS,
        help="the prompts: one fixed prompt, or distinct ones per request",
    )
    parser.add_argument("--salt", default="", help="varies the prompts of a workload between runs")
    parser.add_argument("--fresh-connections", action="store_true", help="a new connection per request")
    parser.add_argument("--label", default="", help="system name recorded with the results")
    parser.add_argument("--out", help="append result rows as JSON lines to this file")
    args = parser.parse_args()
    body = (
        json.loads(args.body)
        if args.body
        else request_body(args.path, args.model, args.max_tokens, args.stream, args.ignore_eos)
    )
    for level in (int(c) for c in args.concurrency.split(",")):
        row = asyncio.run(
            run_level(
                args.url.rstrip("/") + args.path,
                body,
                level,
                args.requests,
                args.stream,
                args.workload,
                f"{args.salt}-{level}",
                args.fresh_connections,
            )
        )
        row.update(system=args.label, max_tokens=body.get("max_tokens", args.max_tokens), stream=args.stream)
        if args.workload == "fixed":
            row["prompt"] = PROMPT
        print(json.dumps(row))
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
