"""Continuous batching over a ``ModelRunner`` and a paged KV cache: the ``Batcher`` the LLM flavors share.

Each step has three phases (as vLLM's and SGLang's schedulers): ``_schedule`` decides what runs (a token for every
decoding sequence, prompt chunks up to ``prefill_tokens``, the KV blocks each needs), the runner executes it in one
forward pass, and ``_update`` records what came back (sampled tokens, end-of-sequence, grammars, length limits,
finished sequences). It moves token ids only: text and stop strings are made where they are read
(``generation.SequenceText``), which aborts a sequence whose text reached a stop string.

Memory is blocks (``kv_cache/blocks.py``): the pool is sized from a byte budget (``kv_cache_bytes``) and a sequence
takes a block each time it crosses a block boundary. A waiting sequence is admitted only when its next chunk's
blocks are free (keeping a small watermark for the running ones); when decoding runs out of blocks, the newest
sequence is preempted: its blocks are freed and it waits again at the head of the queue, to be computed again from
its prompt and the tokens it produced, so it resumes with exactly the tokens it would have produced. A prompt that
could never fit is refused when it is added.

Prompts that start like an earlier prompt share its blocks (the prefix cache is the same pool): a shared system
prompt is computed once and held once. A prompt looks the cache up when its first chunk is planned, not when it
arrives, and each full block is registered as soon as it is computed; a prompt whose next block another prompt
ahead of it is computing waits for that block instead of computing it again, so requests that arrive together
with the same system prompt compute it once too.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import itertools
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

from .batcher import Sequence, StepOutput
from .kv_cache.blocks import BlockPool, block_keys
from .memory import trim_heap
from .model_runner import Chunk, ModelRunner, StepBatch
from .sample.choice import RowSampling, TokenChoice
from .sample.params import SamplingParams
from .structured import Grammars, closing, tokenizer_json

#: share of the machine's memory the KV cache may take on a CPU when no budget is given
CPU_KV_SHARE = 0.4
#: share of the pool's blocks kept free when admitting a sequence (room for the running ones to grow)
WATERMARK = 0.01


def default_kv_cache_bytes() -> int:
    """The KV budget on a CPU when none is given: ``CPU_KV_SHARE`` of physical memory. A CPU pool is committed
    page by page as it is written, so a generous budget costs only what the sequences use."""
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * CPU_KV_SHARE)


@dataclass
class ScheduledSequence(Sequence):
    """A sequence on the scheduler: its blocks, how much of it is cached, its decoder and sampler state."""

    blocks: list[int] = field(default_factory=list)  # its block table
    computed: int = 0  # tokens whose KV is in its blocks
    keys: list[int] = field(default_factory=list)  # prefix-cache keys of its prompt's full blocks
    looked_up: bool = False  # the prefix cache was consulted (at its first planned chunk)
    registered: int = 0  # leading blocks known to be in the prefix cache
    preemptions: int = 0
    generator: Any = None
    matcher: Any = None  # llguidance matcher, under a grammar

    def tokens(self) -> list[int]:
        """What its KV covers once computed: the prompt, then the tokens it produced."""
        return self.prompt_ids + self.generated if self.generated else self.prompt_ids


class Scheduler:
    """A ``Batcher`` over any ``ModelRunner``.

    ``tokenizer`` is what grammars are compiled against; ``eos_ids`` end a sequence (unless its params ignore EOS);
    ``max_num_seqs`` bounds the sequences running at once; ``prefill_tokens`` bounds the prompt tokens computed per
    step; ``kv_cache_bytes`` is the KV cache's memory (default: on a GPU what ``gpu_memory_utilization`` of it leaves
    beside the weights and the largest step (``max_num_seqs`` rows and a chunk of ``prefill_tokens``), the runner's
    ``device_kv_budget``; else ``default_kv_cache_bytes``);
    ``block_size`` its
    positions per block; ``prefix_cache_bytes`` bounds the unreferenced prefix blocks kept (0 turns the prefix cache
    off).
    """

    def __init__(
        self,
        runner: ModelRunner,
        tokenizer: Any,
        eos_ids: set[int],
        max_num_seqs: int = 64,
        prefill_tokens: int = 512,
        prefix_cache_bytes: int = 512 * 1024 * 1024,
        block_size: int = 32,
        kv_cache_bytes: Optional[int] = None,
        gpu_memory_utilization: float = 0.9,
    ):
        self.runner = runner
        self.tokenizer = tokenizer
        self.eos_ids = set(eos_ids)
        self.max_num_seqs = max_num_seqs
        self.prefill_tokens = max(1, prefill_tokens)
        self.block_size = block_size
        per_block = max(1, runner.block_bytes(block_size))
        budget = kv_cache_bytes
        if budget is None:
            on_device = getattr(runner, "device_kv_budget", None)
            budget = on_device(self.prefill_tokens, max_num_seqs, gpu_memory_utilization) if on_device else None
        if budget is None:
            budget = default_kv_cache_bytes()
        cached = prefix_cache_bytes // per_block if runner.paged else 0
        wanted = max_num_seqs * -(-runner.context_length // block_size) + cached  # more would never be used
        num_blocks = min(budget // per_block, wanted)
        if num_blocks < 2:
            raise ValueError(
                f"kv_cache_memory {budget} bytes holds {num_blocks} KV block(s) of {block_size} tokens "
                f"({per_block} bytes each); give it at least {2 * per_block}"
            )
        self.pool = BlockPool(num_blocks, block_size, cached)
        self.prefix_cache = self.pool if cached > 0 else None
        self.watermark = max(1, int(num_blocks * WATERMARK))
        # one sequence can always fit: the pool bounds the context too
        self.context_length = min(runner.context_length, num_blocks * block_size)
        runner.allocate(num_blocks, block_size, max_num_seqs)
        self._warm_up()
        self.waiting: deque[ScheduledSequence] = deque()
        self.prefilling: list[ScheduledSequence] = []  # admitted, prompt not computed yet; in arrival order
        self.running: list[ScheduledSequence] = []  # decoding; in arrival order
        self.last_batch_size = 0
        self.preemptions = 0
        self._ids = itertools.count(1)
        # The grammar tables (llguidance's view of the vocabulary, the closing-token sets) take a moment for a large
        # vocabulary: made on a thread from the start, so the first request with a grammar does not stall the
        # running streams while they are built (where llguidance is missing they are never needed).
        self._grammars: Optional[Grammars] = None
        self._grammars_made: Optional[concurrent.futures.Future[Grammars]] = None
        if importlib.util.find_spec("llguidance") is not None:
            self._grammars_made = concurrent.futures.Future()
            threading.Thread(target=self._make_grammars, name="servelm-grammars", daemon=True).start()

    def _warm_up(self) -> None:
        """One step of the largest prompt chunk and a decode row, into blocks given back at once: the memory and the
        kernels a step of that size needs are set up at load (a server's idle size is then its working size), not
        in the first request's step."""
        tokens = min(self.prefill_tokens, self.context_length - 1)
        blocks = list(range(-(-(tokens + 1) // self.block_size)))
        if len(blocks) > self.pool.num_blocks:
            return
        self.runner.forward(StepBatch(chunks=[Chunk(0, [0] * tokens, 0, blocks)]))
        self.runner.forward(StepBatch([0], [0], [tokens], [blocks]))
        self.runner.free(0)
        self.runner.forget(blocks)

    # ------------------------------------------------------------------ requests
    def add(self, prompt_ids: list[int], params: SamplingParams) -> ScheduledSequence:
        """Queue a sequence; it is admitted at a step with room."""
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        if len(prompt_ids) >= self.context_length:
            if len(prompt_ids) < self.runner.context_length:
                raise ValueError(
                    f"the prompt has {len(prompt_ids)} tokens; this server's KV cache holds {self.context_length} "
                    "tokens (raise --kv-cache-memory to serve longer prompts)"
                )
            raise ValueError(f"the prompt has {len(prompt_ids)} tokens; this model's context is {self.context_length}")
        if min(prompt_ids) < 0 or max(prompt_ids) >= self.runner.vocab_size:
            bad = next(t for t in prompt_ids if not 0 <= t < self.runner.vocab_size)
            raise ValueError(
                f"the prompt holds token id {bad}; this model's token ids run from 0 to {self.runner.vocab_size - 1}"
            )
        seq = ScheduledSequence(list(prompt_ids), params, next(self._ids))
        if params.seed is not None and params.temperature > 0:
            seq.generator = self.runner.generator(params.seed)
        if params.logit_bias and max(params.logit_bias) >= self.runner.vocab_size:
            raise ValueError(
                f"logit_bias names token {max(params.logit_bias)}; "
                f"this model's vocabulary has {self.runner.vocab_size} tokens"
            )
        if params.guided is not None:
            seq.matcher = self.grammars().matcher(params.guided)  # ValueError for a grammar that cannot compile
        if self.prefix_cache is not None:
            seq.keys = block_keys(seq.prompt_ids, self.block_size)
        self.waiting.append(seq)
        return seq

    def grammars(self) -> Grammars:
        """This batcher's compiled grammars (waiting for their tables if they are still being made)."""
        if self._grammars is None:
            if self._grammars_made is not None:
                self._grammars = self._grammars_made.result()
            else:
                self._grammars = Grammars(tokenizer_json(self.tokenizer), self.runner.vocab_size, self.eos_ids)
        return self._grammars

    def _make_grammars(self) -> None:
        assert self._grammars_made is not None
        try:
            grammars = Grammars(tokenizer_json(self.tokenizer), self.runner.vocab_size, self.eos_ids)
            grammars.preferences()
            self._grammars_made.set_result(grammars)
        except BaseException as exc:  # raised where the grammars are first used
            self._grammars_made.set_exception(exc)

    def abort(self, seq: Sequence) -> None:
        """Stop ``seq``; its blocks are freed at the next step."""
        seq.aborted = True

    def has_work(self) -> bool:
        return bool(self.waiting or self.prefilling or self.running)

    # ------------------------------------------------------------------ the step
    def step(self) -> list[StepOutput]:
        """Schedule, execute, update: free aborted sequences, then one forward pass over a token for every decoding
        sequence and prompt chunks up to the token budget; a sequence whose prompt completes samples its first
        token and joins the decoding ones."""
        for seq in [s for s in (*self.running, *self.prefilling, *self.waiting) if s.aborted]:
            seq.finish_reason = seq.finish_reason or "abort"
            self._free(seq)
            if seq in self.waiting:
                self.waiting.remove(seq)
        batch, running, planned, holds = self._schedule()
        outputs: list[StepOutput] = []
        if batch.rows:
            logits, planned, outputs = self._execute(batch, planned)
            self.pool.release(holds)
            outputs += self._update(logits, running, planned)
        else:
            self.pool.release(holds)
        self.last_batch_size = len(outputs)
        return outputs

    def idle(self) -> None:
        """Hand back the memory of blocks that hold nothing (cached prefixes stay). Engines call this once they
        have had no work for a moment, so a burst that follows another finds its blocks warm."""
        if not self.has_work():
            self.runner.forget(self.pool.fresh_blocks())
            trim_heap()

    # ------------------------------------------------------------------ schedule
    def _schedule(
        self,
    ) -> tuple[StepBatch, list[ScheduledSequence], list[tuple[ScheduledSequence, int]], list[int]]:
        """This step's batch: (the batch, the decoding sequences in it, the planned prompt chunks as (sequence,
        tokens), blocks held for the step only (copy sources))."""
        self._make_room_for_decoding()
        running = list(self.running)
        batch = StepBatch()
        for seq in running:
            position = seq.computed
            if position // self.block_size >= len(seq.blocks):
                seq.blocks += self.pool.allocate(1)
            batch.decode_seqs.append(seq.seq_id)
            batch.decode_tokens.append(seq.generated[-1])
            batch.decode_positions.append(position)
            batch.decode_blocks.append(seq.blocks)
        planned, holds = self._plan_prefill(batch)
        while not running and not planned and len(self.prefilling) > 1:
            # admitted prompts hold every block and none can go on: the newest gives its blocks back
            self._preempt(max(self.prefilling, key=lambda s: s.seq_id))
            self.pool.release(holds)
            batch = StepBatch()
            planned, holds = self._plan_prefill(batch)
        return batch, running, planned, holds

    def _make_room_for_decoding(self) -> None:
        """Preempt the newest sequences until every decoding sequence has the block its next token needs."""
        while True:
            needed = sum(1 for s in self.running if s.computed // self.block_size >= len(s.blocks))
            if needed <= self.pool.free():
                return
            victims = sorted(self.running + self.prefilling, key=lambda s: s.seq_id)
            self._preempt(victims[-1])

    def _preempt(self, seq: ScheduledSequence) -> None:
        """Give ``seq``'s blocks back and queue it first, to be computed again from its tokens (prompt and output)."""
        self._free(seq)
        seq.computed, seq.looked_up, seq.registered = 0, False, 0
        seq.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(seq)

    def _plan_prefill(self, batch: StepBatch) -> tuple[list[tuple[ScheduledSequence, int]], list[int]]:
        """Prompt chunks for this step, oldest sequence first, up to the token budget, each with the blocks it needs
        (a waiting sequence is admitted when there is a row and its chunk's blocks are free beyond the watermark);
        a prompt not started yet takes its cached prefix first, or waits while a prompt ahead of it computes the
        block it would compute next. Returns the chunks as (sequence, tokens) and the blocks held for the step."""
        planned: list[tuple[ScheduledSequence, int]] = []
        holds: list[int] = []
        budget = self.prefill_tokens
        computing: set[int] = set()  # keys of the blocks prompts ahead have still to compute
        candidates = list(self.prefilling)
        admitted = len(self.running) + len(self.prefilling)
        waiting = iter(list(self.waiting))
        while budget > 0:
            seq = candidates.pop(0) if candidates else None
            new = False
            if seq is None:
                if admitted >= self.max_num_seqs:
                    break
                seq = next(waiting, None)
                if seq is None:
                    break
                new = True
            if not seq.looked_up and self._waits_for_a_block(seq, computing):
                if new:  # it takes its place in the batch now, and its blocks once the block it waits for is computed
                    self._admit(seq)
                    admitted += 1
                continue
            reserve = self.watermark if new and (self.running or planned) else 0
            looked_up_now = not seq.looked_up
            if looked_up_now and not self._take_prefix(seq, batch, holds, reserve):
                break
            total = len(seq.tokens())
            take = min(budget, total - seq.computed)
            needed = -(-(seq.computed + take) // self.block_size) - len(seq.blocks)
            if needed > self.pool.free() - reserve:
                take = (len(seq.blocks) + self.pool.free() - reserve) * self.block_size - seq.computed
                if take <= 0:
                    if looked_up_now:
                        self._drop_prefix(seq, batch)
                    break  # no room: it (and those after it) wait for blocks to come free
                needed = -(-(seq.computed + take) // self.block_size) - len(seq.blocks)
            if needed > 0:
                seq.blocks += self.pool.allocate(needed)
            if new:
                self._admit(seq)
                admitted += 1
            if self.prefix_cache is not None:
                computing.update(seq.keys[seq.computed // self.block_size :])
            batch.chunks.append(
                Chunk(seq.seq_id, seq.tokens()[seq.computed : seq.computed + take], seq.computed, seq.blocks)
            )
            planned.append((seq, take))
            budget -= take
        return planned, holds

    def _admit(self, seq: ScheduledSequence) -> None:
        self.waiting.remove(seq)
        self.prefilling.append(seq)
        seq.scheduled_at = seq.scheduled_at or time.time()

    def _take_prefix(self, seq: ScheduledSequence, batch: StepBatch, holds: list[int], reserve: int) -> bool:
        """Give ``seq`` (nothing computed yet) the cached blocks of its longest cached prefix, and the leading positions
        of a cached block after them through a copy into a block of its own. False when there is no block for that
        copy."""
        seq.looked_up = True
        if self.prefix_cache is None:
            return True
        hit = self.pool.lookup(seq.keys, seq.tokens())
        self.pool.share(hit.blocks)
        seq.blocks = list(hit.blocks)
        seq.computed = seq.registered = len(hit.blocks)
        seq.computed *= self.block_size
        if hit.partial >= 0:
            if self.pool.free() - reserve < 1:
                self._drop_prefix(seq, batch)
                return False
            self.pool.share([hit.partial])  # held until the copy is made
            holds.append(hit.partial)
            target = self.pool.allocate(1)[0]
            seq.blocks.append(target)
            batch.copies.append((hit.partial, target, hit.partial_tokens))
            seq.computed += hit.partial_tokens
        return True

    def _drop_prefix(self, seq: ScheduledSequence, batch: StepBatch) -> None:
        """Undo ``_take_prefix`` for a sequence that gets no chunk this step after all."""
        batch.copies = [copy for copy in batch.copies if copy[1] not in seq.blocks]
        self.pool.release(seq.blocks)
        seq.blocks, seq.computed, seq.registered, seq.looked_up = [], 0, 0, False

    def _waits_for_a_block(self, seq: ScheduledSequence, computing: set[int]) -> bool:
        """Whether the first block ``seq`` would compute is one a prompt ahead of it is computing."""
        if self.prefix_cache is None or not computing:
            return False
        loadable = seq.keys[: (len(seq.tokens()) - 1) // self.block_size]  # as ``BlockPool.lookup`` caps it
        found = self.pool.depth(loadable)
        return found < len(loadable) and loadable[found] in computing

    # ------------------------------------------------------------------ execute
    def _execute(
        self, batch: StepBatch, planned: list[tuple[ScheduledSequence, int]]
    ) -> tuple[Any, list[tuple[ScheduledSequence, int]], list[StepOutput]]:
        """One forward pass over the batch: (logits, the chunks it carried, the outputs of sequences that failed).
        Where the pass raises, each prompt chunk is run alone to find the ones that fail; those sequences end with
        their own error and the pass runs again without them, so one bad prompt never fails the sequences beside
        it. (A pass writes each token's keys and values at its own position, so running a chunk again rewrites the
        same cache entries.) A pass of decoding sequences alone that raises is the engine's failure, raised to its
        caller."""
        try:
            return self.runner.forward(batch), planned, []
        except Exception:
            if not planned:
                raise
            failed: list[tuple[ScheduledSequence, Exception]] = []
            for (seq, _), chunk in zip(planned, batch.chunks):
                try:
                    self.runner.forward(StepBatch(chunks=[chunk], copies=batch.copies))
                except Exception as exc:
                    failed.append((seq, exc))
            if not failed:
                raise
        gone = {id(seq) for seq, _ in failed}
        kept = [(i, p) for i, p in enumerate(planned) if id(p[0]) not in gone]
        outputs = [self._fail(seq, exc) for seq, exc in failed]
        batch.chunks = [batch.chunks[i] for i, _ in kept]
        batch.copies = []  # made by the passes above
        if not batch.rows:
            return None, [], outputs
        return self.runner.forward(batch), [p for _, p in kept], outputs

    # ------------------------------------------------------------------ update
    def _update(
        self, logits: Any, running: list[ScheduledSequence], planned: list[tuple[ScheduledSequence, int]]
    ) -> list[StepOutput]:
        """Record the pass: what each sequence now has cached, its full prompt blocks made findable, and a sampled
        token for each decoding sequence and each sequence whose prompt is now complete."""
        for seq in running:
            seq.computed += 1
        for seq, take in planned:
            seq.computed += take
            self._register_prefix(seq)
        completed = [i for i, (seq, _) in enumerate(planned) if seq.computed == len(seq.tokens())]
        sampled = running + [planned[i][0] for i in completed]
        if not sampled:
            return []
        wanted = list(range(len(running))) + [len(running) + i for i in completed]
        choices = self._sample(logits if len(wanted) == len(logits) else logits[wanted], sampled)
        outputs = []
        for i, (seq, choice) in enumerate(zip(sampled, choices)):
            if isinstance(choice, Exception):  # its sampling failed alone: it ends, the others go on
                outputs.append(self._fail(seq, choice))
                continue
            if i >= len(running):  # its prompt is complete: it joins the decoding sequences
                self.prefilling.remove(seq)
                self.running.append(seq)
            outputs.append(self._accept(seq, choice))
        return outputs

    def _register_prefix(self, seq: ScheduledSequence) -> None:
        """Make the prompt blocks of ``seq`` computed since the last time findable by later prompts."""
        if self.prefix_cache is None:
            return
        size = self.block_size
        done = min(len(seq.keys), seq.computed // size)
        for i in range(seq.registered, done):
            previous = seq.keys[i - 1] if i else 0
            self.pool.register(seq.blocks[i], seq.keys[i], seq.prompt_ids[i * size : (i + 1) * size], previous)
        seq.registered = max(seq.registered, done)

    def _fail(self, seq: ScheduledSequence, exc: Exception) -> StepOutput:
        """End ``seq`` alone with the error its own step raised (the engine reports it to its request only)."""
        seq.error = f"{type(exc).__name__}: {exc}"
        return self._finish(seq, "error", [])

    def _sample(self, logits: Any, seqs: list[ScheduledSequence]) -> list[Any]:
        """The runner's sampler over ``seqs``' rows of ``logits``, with grammar masks for constrained rows: a
        TokenChoice per sequence, or the exception its row alone raised (where sampling the batch raises, each
        row is sampled by itself)."""
        rows = [
            RowSampling(
                s.params,
                s.generator,
                s.generated
                if s.params.presence_penalty or s.params.frequency_penalty or s.params.repetition_penalty != 1.0
                else None,
                prompt=s.prompt_ids if s.params.repetition_penalty != 1.0 else None,
            )
            for s in seqs
        ]
        constrained = [i for i, s in enumerate(seqs) if s.matcher is not None]
        failed: dict[int, Exception] = {}
        if constrained:
            near_limit = [closing(seqs[i].params.max_tokens, len(seqs[i].generated)) for i in constrained]
            masks = self.grammars().allowed(
                [seqs[i].matcher for i in constrained], near_limit, [seqs[i].params.guided for i in constrained]
            )  # [constrained, vocab]
            for i, mask in zip(constrained, masks):
                rows[i].allowed = mask
                if seqs[i].matcher.is_error():  # past its grammar's limits: it cannot be followed any further
                    failed[i] = _grammar_error(seqs[i].matcher)
                    rows[i].allowed = None
        choices = self._sample_rows(logits, rows)
        return [failed.get(i, choice) for i, choice in enumerate(choices)]  # failed rows end with their error

    def _sample_rows(self, logits: Any, rows: list[RowSampling]) -> list[Any]:
        """The runner's sampler over ``rows``: a TokenChoice per row, or the exception its row alone raised."""
        try:
            return list(self.runner.sample(logits, rows))
        except Exception:
            choices: list[Any] = []
            for i, row in enumerate(rows):
                try:
                    choices += self.runner.sample(logits[i : i + 1], [row])
                except Exception as exc:
                    choices.append(exc)
            return choices

    # ------------------------------------------------------------------ sampled tokens
    def _accept(self, seq: ScheduledSequence, choice: TokenChoice) -> StepOutput:
        """Record a sampled token: EOS, a completed grammar and length limits; free the row when done."""
        token = choice.token
        logged = choice if seq.params.logprobs is not None else None
        if token in self.eos_ids and (not seq.params.ignore_eos or seq.matcher is not None):
            return self._finish(seq, "stop", [])
        seq.generated.append(token)
        if seq.matcher is not None:
            seq.matcher.consume_token(token)
            if seq.matcher.is_error():
                return self._fail(seq, _grammar_error(seq.matcher))
            if seq.matcher.is_stopped():  # the grammar is complete: nothing may follow
                return self._finish(seq, "stop", [token], logged)
        if (
            len(seq.generated) >= seq.params.max_tokens
            or len(seq.prompt_ids) + len(seq.generated) >= self.context_length
        ):
            return self._finish(seq, "length", [token], logged)
        return StepOutput(seq, [token], False, logged)

    def _finish(
        self, seq: ScheduledSequence, reason: str, token_ids: list[int], choice: Optional[TokenChoice] = None
    ) -> StepOutput:
        seq.finish_reason = reason
        self._free(seq)
        return StepOutput(seq, token_ids, True, choice)

    # ------------------------------------------------------------------ blocks
    def _free(self, seq: ScheduledSequence) -> None:
        """Give a sequence's blocks back and take it off the running or prefilling list."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.prefilling:
            self.prefilling.remove(seq)
        if seq.blocks:
            self.pool.release(seq.blocks)
            seq.blocks = []
        self.runner.free(seq.seq_id)


def _grammar_error(matcher: Any) -> ValueError:
    """The error a sequence ends with when its grammar's matcher failed (past its limits)."""
    return ValueError(f"the output grammar failed: {matcher.get_error().splitlines()[0]}")
