"""The llamacpp engine: llama.cpp (the ``xllamacpp`` wheel, its server embedded in process) runs a GGUF file
with the quantization it was saved in, behind the same ``Engine`` contract as the other engines, so LLMService
serves it with the same endpoints, metrics, auth, limits and error shapes.

servelm renders and counts the prompt (the chat template comes from the GGUF) and hands llama.cpp token ids;
llama.cpp batches its slots continuously and streams each sequence's tokens back through a callback, without
an HTTP hop (``Server.handle_completions``). Its sampler chain is set to vLLM's order (penalties, temperature,
min-p, top-k, top-p), so a request samples as on the other engines. A client that goes away stops its sequence
at the next token (the callback asks llama.cpp to stop). xllamacpp is imported only when this engine starts.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from servelm.flavors.engine import SamplingParams
from servelm.flavors.engine.sample.choice import TokenChoice

from ..options import EngineOptions
from .base import Delta

log = logging.getLogger("servelm.llamacpp")
INSTALL_HINT = "the llamacpp engine needs llama.cpp's prebuilt wheel: pip install 'servelm[llamacpp]'"
#: the sampler chain of every request: vLLM's order, so sampling means the same on every engine
SAMPLERS = ["penalties", "temperature", "min_p", "top_k", "top_p"]
#: tokens of KV cache the slots share without --max-model-len (32 sequences of 512 tokens; SmolLM2: 377 MB)
DEFAULT_CONTEXT = 16384


def llamacpp_available() -> bool:
    """Whether xllamacpp can be imported here (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("xllamacpp") is not None


def gguf_context_length(path: str) -> Optional[int]:
    """The context the model was trained for (``<arch>.context_length`` in the GGUF's metadata), or None."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    reader = GGUFReader(path)
    arch_field = reader.fields.get("general.architecture")
    if arch_field is None:
        return None
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
    field = reader.fields.get(f"{arch}.context_length")
    return int(field.parts[field.data[0]][0]) if field is not None else None


class LlamaCppEngine:
    """An ``Engine`` over llama.cpp's server context for one GGUF file; ``submit`` / ``abort`` are called from
    the event loop, each running sequence holds a worker thread blocked in llama.cpp (which releases the GIL)."""

    def __init__(self, gguf_path: str, options: EngineOptions, trained_context: Optional[int] = None):
        self.path = gguf_path
        self.slots = options.max_num_seqs
        self.threads = options.threads or os.cpu_count() or 1
        # one pool of KV cache the slots share (llama.cpp's unified KV cache), in tokens; a request may use as much
        # of it as the model was trained for
        self.kv_tokens = options.max_model_len or DEFAULT_CONTEXT
        self.context_length = min(self.kv_tokens, trained_context) if trained_context else self.kv_tokens
        self.server: Any = None
        self._pool: Optional[ThreadPoolExecutor] = None
        self._ids = itertools.count(1)
        self._running: set[int] = set()  # ids of the sequences llama.cpp is generating (a worker thread each)

    async def start(self) -> None:
        """Load the GGUF into llama.cpp (its slots and KV cache are allocated now)."""
        try:
            import xllamacpp
        except ImportError as exc:
            raise RuntimeError(f"{INSTALL_HINT} ({exc})") from None
        params = xllamacpp.CommonParams()
        params.model.path = self.path
        params.n_parallel = self.slots
        params.kv_unified = True
        params.n_ctx = self.kv_tokens
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.port = 0  # no HTTP listener: requests come through handle_completions
        params.cache_prompt = True  # a prompt sharing a prefix with a slot's last one reuses its KV
        # no second copy of finished slots' KV in host RAM (llama.cpp keeps up to 8 GiB by default): the memory
        # of this engine is the model and its KV pool
        params.cache_ram_mib = 0
        params.endpoint_metrics = True  # llama.cpp's own counters (``metrics``)
        params.sampling.samplers = ";".join(SAMPLERS)
        log.info(
            "starting llama.cpp for %s: %d slots, %d tokens of KV cache, %d threads",
            self.path,
            self.slots,
            self.kv_tokens,
            self.threads,
        )
        self.server = await asyncio.to_thread(xllamacpp.Server, params)
        self._pool = ThreadPoolExecutor(max_workers=self.slots + 4, thread_name_prefix="llamacpp")

    async def stop(self) -> None:
        held, self.server = [self.server], None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        # the last reference dropped on a worker thread: the Server's destructor joins llama.cpp's loop
        await asyncio.to_thread(held.clear)

    def health_error(self) -> Optional[str]:
        """None: llama.cpp runs in this process, and a failed generation fails its own request."""
        return None

    def has_work(self) -> bool:
        """Whether llama.cpp is generating any sequence now."""
        return bool(self._running)

    def metrics(self) -> dict[str, float]:
        """llama.cpp's own counters (``llamacpp:n_busy_slots_per_decode``, ``llamacpp:requests_processing``...)."""
        values = {}
        for line in self.server.handle_metrics().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> LlamaCppStream:
        stream = LlamaCppStream(next(self._ids), params)
        body = request_body(prompt_ids, params, self.context_length)
        loop = asyncio.get_running_loop()
        assert self._pool is not None and self.server is not None, "the llamacpp engine is not started"
        self._pool.submit(self._run, stream, body, loop)
        return stream

    def abort(self, stream: Any) -> None:
        stream.cancelled = True  # the next token's callback tells llama.cpp to stop the sequence

    def _run(self, stream: LlamaCppStream, body: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        """On a worker thread: the whole generation, each chunk handed to the loop."""

        def on_chunk(chunk: dict[str, Any]) -> bool:
            if not stream.cancelled:
                loop.call_soon_threadsafe(stream.put, chunk)
            return stream.cancelled  # True stops the sequence in llama.cpp

        self._running.add(stream.rid)
        try:
            self.server.handle_completions(body, on_chunk)
        except Exception as exc:  # a failed request fails alone
            log.exception("llama.cpp request %s failed", stream.rid)
            loop.call_soon_threadsafe(stream.put, {"error": {"message": f"llama.cpp: {type(exc).__name__}: {exc}"}})
        finally:
            self._running.discard(stream.rid)
        loop.call_soon_threadsafe(stream.put, None)  # the end, whatever came before


def request_body(prompt_ids: list[int], p: SamplingParams, context_length: int) -> dict[str, Any]:
    """llama.cpp's /completion request for one sequence of ours (token ids in, streamed)."""
    penalized = p.repetition_penalty != 1.0 or p.presence_penalty or p.frequency_penalty
    body: dict[str, Any] = {
        "prompt": prompt_ids,
        "n_predict": p.max_tokens,
        "stream": True,
        "temperature": p.temperature,
        "top_k": p.top_k if p.top_k > 0 else 0,  # 0: off
        "top_p": p.top_p,
        "min_p": p.min_p,  # llama.cpp's default is 0.05: always sent
        "repeat_penalty": p.repetition_penalty,
        "repeat_last_n": context_length if penalized else 0,  # the whole context, as vLLM counts prompt and output
        "presence_penalty": p.presence_penalty,
        "frequency_penalty": p.frequency_penalty,
        "ignore_eos": p.ignore_eos,
        "samplers": SAMPLERS,
        "cache_prompt": True,
    }
    if p.stop:
        body["stop"] = list(p.stop)
    if p.seed is not None:
        body["seed"] = p.seed % 2**32  # llama.cpp seeds are 32-bit
    if p.logit_bias:
        body["logit_bias"] = [[int(token), float(bias)] for token, bias in p.logit_bias.items()]
    if p.logprobs is not None:
        body["n_probs"] = max(p.logprobs, 1)
    if p.guided is not None:  # this llama.cpp build has llguidance: servelm's grammars go to it as they are
        from servelm.flavors.engine.structured import lark_text  # (numpy: imported only where a grammar is asked)

        body["grammar"] = "%llguidance {}\n" + lark_text(p.guided)
    return body


class LlamaCppStream:
    """One sequence's output (a ``RequestStream``): llama.cpp's chunks, fed by the worker thread."""

    def __init__(self, rid: int, params: SamplingParams):
        self.rid = rid
        self.params = params
        self.cancelled = False
        self.tokens = 0
        self.finished = False
        self._queue: asyncio.Queue[Optional[dict[str, Any]]] = asyncio.Queue()

    def put(self, chunk: Optional[dict[str, Any]]) -> None:
        self._queue.put_nowait(chunk)

    def get_ready(self) -> list[Delta]:
        ready = []
        while not self.finished and not self._queue.empty():
            ready.append(self._delta(self._queue.get_nowait()))
        return ready

    async def get(self) -> Delta:
        if self.finished:
            return Delta("", True, "abort", self.tokens)
        return self._delta(await self._queue.get())

    def _delta(self, chunk: Optional[dict[str, Any]]) -> Delta:
        if chunk is None:  # the generation returned without a finishing chunk: it was stopped
            self.finished = True
            return Delta("", True, "abort", self.tokens)
        if "error" in chunk or ("code" in chunk and "message" in chunk):
            self.finished = True
            error = chunk.get("error", chunk)
            message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
            refused = self.tokens == 0
            return Delta("", True, "error" if refused else None, self.tokens, error=f"llama.cpp: {message}")
        choice = (chunk.get("choices") or [{}])[0]
        text = choice.get("text") or ""
        reason = choice.get("finish_reason")
        usage = chunk.get("usage")
        content = (choice.get("logprobs") or {}).get("content") or []
        if usage:
            self.tokens = int(usage.get("completion_tokens", self.tokens))
        elif content:
            self.tokens += len(content)
        elif reason is None:
            self.tokens += 1  # llama.cpp streams one chunk per token
        if reason is not None:
            self.finished = True
        logprobs = _choices(content, self.params.logprobs) if self.params.logprobs is not None else None
        return Delta(text, reason is not None, reason, self.tokens, logprobs=logprobs)


def _choices(content: list[dict[str, Any]], top: Optional[int]) -> Optional[list[TokenChoice]]:
    """llama.cpp's per-token log-probabilities as TokenChoices (the model's own, before sampling)."""
    if not content:
        return None
    return [
        TokenChoice(
            int(item["id"]),
            float(item["logprob"]),
            [(int(t["id"]), float(t["logprob"])) for t in (item.get("top_logprobs") or [])[: top or 0]],
        )
        for item in content
    ]
