"""Batched generation on onnxruntime-genai's ``Engine``: requests join and leave its scheduler as they
come and go, each with its own sampling options and token limits; tokens come back as events and are
passed on as token ids (text and stop strings are made by the reader, ``generation.SequenceText``).

Same contract as the transformers batcher (``add`` / ``step`` / ``abort`` / ``has_work``), so the pyfunc
model and the serving engine drive either. An Engine may only be used from the thread that created it:
build this object on the thread that will step it.

On exports without paged attention (every CPU export) onnxruntime-genai 0.18's Engine batches statically:
it runs at most 4 requests at once (a constant in its scheduler) and a newcomer waits until that whole
batch has finished. So this batcher keeps a pool of Engines (at most one per allowed sequence) and puts
a newcomer where it starts at the next step: beside others whose batch has not started yet, else in an
idle Engine; each step advances every Engine with work. A dynamically batching export (paged
attention, CUDA) needs only one Engine.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..onnx.runtime import GenaiModel, import_genai
from . import SamplingParams, Sequence, StepOutput

_EVENT_CAPACITY = 1024  # events one Engine.run may return (at most one token per running request)
STATIC_BATCH = 4  # requests onnxruntime-genai's static scheduler runs together (fixed in 0.18)


@dataclass
class GenaiSequence(Sequence):
    """One generation on onnxruntime-genai: its Engine request (or Generator) and decoder."""

    request: Any = None
    turn: int = 0
    slot: Any = None  # the _EngineSlot running it
    generator: Any = None  # og.Generator, for a seeded sampled sequence
    max_tokens: int = 0


@dataclass
class _EngineSlot:
    """One Engine of the pool, its event buffer, and how many sequences it holds."""

    engine: Any
    buffer: Any
    load: int = 0  # sequences it holds
    started: bool = False  # its current batch has run a step (a static batch takes no one after that)


class GenaiBatcher:
    """Runs many sequences through a pool of onnxruntime-genai Engines (one when it batches dynamically)."""

    def __init__(self, genai: GenaiModel):
        self.og = import_genai()
        self.genai = genai
        self.context_length = genai.context_length
        self.pool_size = 1 if genai.dynamic_batching else max(1, genai.max_batch_size)
        self.slots: list[_EngineSlot] = []
        self.live: dict[Any, GenaiSequence] = {}  # og.Request -> sequence
        self.seeded: list[GenaiSequence] = []  # sequences on their own Generator
        self._ids = itertools.count(1)
        self._finished = self.og.EngineEventFlags.TURN_FINISHED.value
        self._token = self.og.EngineEventFlags.TOKEN.value
        self._failed = self.og.EngineEventFlags.FAILED.value
        self.last_batch_size = 0

    # ------------------------------------------------------------------ requests
    def add(self, prompt_ids: list[int], params: SamplingParams) -> GenaiSequence:
        """Start a sequence; the Engine schedules it at the next step with room."""
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        if params.needs_processing or params.logprobs is not None or params.min_p > 0:
            raise ValueError(
                f"onnxruntime-genai's Engine ({self.genai.provider}) cannot constrain output to a grammar "
                "(response_format, a forced tool_choice), apply penalties, min_p or logit_bias, or give logprobs; "
                "serve this model on cpu for those"
            )
        if len(prompt_ids) >= self.context_length:
            raise ValueError(f"the prompt has {len(prompt_ids)} tokens; this model's context is {self.context_length}")
        og = self.og
        max_tokens = max(1, min(params.max_tokens, self.context_length - len(prompt_ids)))
        seq = GenaiSequence(list(prompt_ids), params, next(self._ids))
        if params.seed is not None and params.temperature > 0:
            self._start_generator(seq, max_tokens)  # the static Engine cannot reseed a request
            return seq
        options = og.RequestOptions()
        options.set_max_session_tokens(len(prompt_ids) + max_tokens)  # never the context length by default
        slot = self._least_busy()
        request = slot.engine.create_request(options=options)
        turn = og.TurnOptions(request)
        turn.set_max_generated_tokens(max_tokens)
        if params.temperature > 0:
            turn.set_do_sample(True)
            turn.set_temperature(params.temperature)
            turn.set_top_p(params.top_p)
            turn.set_top_k(params.top_k if params.top_k > 0 else 0)
        else:
            turn.set_do_sample(False)
            turn.set_temperature(0.0)
        if params.ignore_eos:
            turn.set_min_generated_tokens(max_tokens)
        seq.turn = request.begin_turn(np.asarray(prompt_ids, dtype=np.int32), turn)
        seq.request = request
        seq.slot = slot
        slot.load += 1
        self.live[request] = seq
        return seq

    def _least_busy(self) -> _EngineSlot:
        """Where a newcomer starts soonest: an Engine whose batch has not started and has room (they start
        together), else an idle one, else a new one while the pool has room, else the least loaded."""
        if self.pool_size == 1 and self.slots:
            return self.slots[0]
        joinable = [s for s in self.slots if not s.started and s.load < STATIC_BATCH]
        if joinable:
            return max(joinable, key=lambda s: s.load)
        if len(self.slots) >= self.pool_size:
            return min(self.slots, key=lambda s: s.load)
        engine = self.og.Engine(self.genai.model)
        self.slots.append(_EngineSlot(engine, engine.create_event_buffer(_EVENT_CAPACITY)))
        return self.slots[-1]

    def _start_generator(self, seq: GenaiSequence, max_tokens: int) -> None:
        """A seeded sampled sequence runs on its own Generator (reproducible whatever else runs)."""
        p = seq.params
        params = self.og.GeneratorParams(self.genai.model)
        params.set_search_options(
            do_sample=True,
            temperature=p.temperature,
            top_p=p.top_p,
            top_k=p.top_k if p.top_k > 0 else self.genai.vocab_size,
            random_seed=p.seed,
            max_length=len(seq.prompt_ids) + max_tokens,
            min_length=len(seq.prompt_ids) + max_tokens if p.ignore_eos else 0,
        )
        seq.generator = self.og.Generator(self.genai.model, params)
        seq.generator.append_tokens(np.asarray(seq.prompt_ids, dtype=np.int32))
        seq.max_tokens = max_tokens
        self.seeded.append(seq)

    def abort(self, seq: GenaiSequence) -> None:
        """Stop a sequence now; the Engine drops it before its next step."""
        seq.aborted = True
        if seq.finish_reason is None:
            seq.finish_reason = "abort"
            self._release(seq, cancel=True)

    def has_work(self) -> bool:
        return bool(self.live or self.seeded)

    def idle(self) -> None:
        """Nothing to free: onnxruntime-genai's Engine owns its cache."""

    # ------------------------------------------------------------------ the step
    def step(self) -> list[StepOutput]:
        """One Engine step (prefill of newcomers and/or a decode for the scheduled batch), and one token
        for each seeded sequence."""
        outputs: list[StepOutput] = []
        tokens = 0
        for slot in self.slots:
            if slot.load == 0:
                continue
            slot.started = True
            for event in slot.engine.run(slot.buffer):
                seq = self.live.get(event.request)
                if seq is None or seq.finish_reason is not None:
                    continue
                flags = event.flags.value
                new: list[int] = []
                if flags & self._token:
                    tokens += 1
                    is_eos = int(event.token) in self.genai.eos_ids and event.finish_reason == self.og.FinishReason.EOS
                    if not is_eos:  # the end-of-sequence token is not part of the answer
                        new.append(int(event.token))
                        seq.generated.append(new[0])
                if flags & self._failed:
                    seq.error = f"onnxruntime-genai failed this request ({event.error_code.name})"
                    self._finish(seq, "error", cancel=False)
                elif flags & self._finished:
                    self._finish(seq, _FINISH.get(event.finish_reason.name, "stop"), cancel=False)
                outputs.append(StepOutput(seq, new, seq.finish_reason is not None))
        for seq in list(self.seeded):
            tokens += 1
            outputs.append(self._generator_step(seq))
        self.last_batch_size = tokens
        return outputs

    def _generator_step(self, seq: GenaiSequence) -> StepOutput:
        seq.generator.generate_next_token()
        token = int(seq.generator.get_next_tokens()[0])
        if token in self.genai.eos_ids and not seq.params.ignore_eos:
            self._finish(seq, "stop", cancel=False)
            return StepOutput(seq, [], True)
        seq.generated.append(token)
        if len(seq.generated) >= seq.max_tokens or seq.generator.is_done():
            self._finish(seq, "length", cancel=False)
            return StepOutput(seq, [token], True)
        return StepOutput(seq, [token], False)

    def _finish(self, seq: GenaiSequence, reason: str, cancel: bool) -> None:
        """End a sequence and free its Engine request or Generator."""
        seq.finish_reason = reason
        self._release(seq, cancel)

    def _release(self, seq: GenaiSequence, cancel: bool) -> None:
        if seq.generator is not None:
            if seq in self.seeded:
                self.seeded.remove(seq)
            seq.generator = None
            return
        if self.live.pop(seq.request, None) is not None:
            seq.slot.load -= 1
            if seq.slot.load == 0:
                seq.slot.started = False  # its batch is over: the next newcomers start a fresh one
        if cancel:
            seq.request.cancel_turn(seq.turn)
        seq.request.close()


_FINISH = {
    "EOS": "stop",
    "STOP_STRING": "stop",
    "MAX_GENERATED_TOKENS": "length",
    "MAX_SESSION_TOKENS": "length",
    "CANCELLED": "abort",
    "FAILED": "error",
}
