"""Continuous batching over a ``ModelRunner``: the ``Batcher`` the LLM flavors share.

Sequences wait, then take a row of the runner's KV cache and are prefilled in chunks (at most
``prefill_tokens`` prompt tokens per step, so a long prompt never stalls running streams for long), then
decode one token per step together with every other running sequence, and free their row when done.

Rows: the decoding sequences always occupy rows ``0 .. n-1`` (one batched decode call over a contiguous
block of the cache); sequences still prefilling sit above them. A finished row is filled by moving the
last decoding row into it, and a sequence whose prefill completes moves to row ``n``: one sequence's KV
copied, never the whole cache.

Prompts that start like an earlier prompt reuse its KV (``kv_cache/prefix.py``): a shared system prompt is
computed once. A prompt looks the cache up when its prefill is first planned, not when it arrives, and
each full block is saved as soon as it is computed; a prompt whose next block another prompt ahead of it
is computing waits for that block instead of computing it again, so requests that arrive together with
the same system prompt compute it once too.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

from ..generation.detokenizer import IncrementalDetokenizer
from ..generation.stop import StopChecker
from .batcher import Sequence, StepOutput
from .kv_cache.prefix import PrefixCache, block_keys
from .memory import trim_heap
from .model_runner import Chunk, ModelRunner
from .sample.choice import RowSampling, TokenChoice
from .sample.params import SamplingParams
from .structured import Grammars, closing, tokenizer_json


@dataclass
class ScheduledSequence(Sequence):
    """A sequence on the scheduler: its row, how much of it is cached, its decoder and sampler state."""

    row: int = -1
    computed: int = 0  # tokens whose KV is in the cache
    pending: int = -1  # the last sampled token, fed to the next decode step
    keys: list[int] = field(default_factory=list)  # prefix-cache keys of its prompt's full blocks
    looked_up: bool = False  # the prefix cache was consulted (at its first planned prefill)
    saved: int = 0  # leading blocks known to be in the prefix cache
    detokenizer: Optional[IncrementalDetokenizer] = None
    generator: Any = None
    matcher: Any = None  # llguidance matcher, under a grammar


class Scheduler:
    """A ``Batcher`` over any ``ModelRunner``.

    ``tokenizer`` decodes output text; ``eos_ids`` end a sequence (unless its params ignore EOS);
    ``max_num_seqs`` bounds the rows; ``prefill_tokens`` bounds the prompt tokens computed per step;
    ``prefix_cache_bytes`` bounds the prefix cache (0 turns it off).
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
    ):
        self.runner = runner
        self.tokenizer = tokenizer
        self.eos_ids = set(eos_ids)
        self.context_length = runner.context_length
        self.max_num_seqs = max_num_seqs
        self.prefill_tokens = max(1, prefill_tokens)
        self.prefix_cache = PrefixCache(block_size, prefix_cache_bytes) if prefix_cache_bytes > 0 else None
        self.waiting: deque[ScheduledSequence] = deque()
        self.rows: list[Optional[ScheduledSequence]] = []  # by row; decoding rows first
        self.decoding = 0  # rows 0 .. decoding-1 decode this step
        self.prefilling: deque[ScheduledSequence] = deque()  # in arrival order
        self.last_batch_size = 0
        self._ids = itertools.count(1)
        # The grammar tables (llguidance's view of the vocabulary, the closing-token sets) take a moment for a large
        # vocabulary: made on a thread from the start, so the first request with a grammar does not stall the
        # running streams while they are built (where llguidance is missing they are never needed).
        self._grammars: Optional[Grammars] = None
        self._grammars_made: Optional[concurrent.futures.Future[Grammars]] = None
        if importlib.util.find_spec("llguidance") is not None:
            self._grammars_made = concurrent.futures.Future()
            threading.Thread(target=self._make_grammars, name="servelm-grammars", daemon=True).start()

    # ------------------------------------------------------------------ requests
    def add(self, prompt_ids: list[int], params: SamplingParams) -> ScheduledSequence:
        """Queue a sequence; it takes a row at the next step with room."""
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        if len(prompt_ids) >= self.context_length:
            raise ValueError(f"the prompt has {len(prompt_ids)} tokens; this model's context is {self.context_length}")
        if min(prompt_ids) < 0 or max(prompt_ids) >= self.runner.vocab_size:
            bad = next(t for t in prompt_ids if not 0 <= t < self.runner.vocab_size)
            raise ValueError(
                f"the prompt holds token id {bad}; this model's token ids run from 0 to {self.runner.vocab_size - 1}"
            )
        seq = ScheduledSequence(list(prompt_ids), params, next(self._ids))
        seq.detokenizer = IncrementalDetokenizer(self.tokenizer)
        seq.stopper = StopChecker(params.stop)
        if params.seed is not None and params.temperature > 0:
            seq.generator = self.runner.generator(params.seed)
        if params.logit_bias and max(params.logit_bias) >= self.runner.vocab_size:
            raise ValueError(
                f"logit_bias names token {max(params.logit_bias)}; "
                f"this model's vocabulary has {self.runner.vocab_size} tokens"
            )
        if params.guided is not None:
            seq.matcher = self.grammars().matcher(params.guided)  # ValueError for a grammar that cannot compile
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
        """Stop ``seq``; its row is freed at the next step."""
        seq.aborted = True

    def has_work(self) -> bool:
        return bool(self.waiting) or any(s is not None for s in self.rows)

    # ------------------------------------------------------------------ the step
    def step(self) -> list[StepOutput]:
        """Free aborted rows, admit waiting sequences, then one forward pass: a token for every running
        sequence and prompt chunks up to the token budget; a sequence whose prompt completes samples its
        first token and joins the decoding rows."""
        for seq in [s for s in self.rows if s is not None and s.aborted]:
            seq.finish_reason = seq.finish_reason or "abort"
            self._free(seq)
        self._admit()
        running: list[ScheduledSequence] = self.rows[: self.decoding]  # type: ignore[assignment]
        planned = self._plan_prefill()
        if running:
            longest = max(s.computed for s in running) + 1
            self.runner.ensure(len(self.rows), self._room_for(longest + 32))
        outputs: list[StepOutput] = []
        if running or planned:
            logits, planned, outputs = self._forward(running, planned)
            for seq in running:
                seq.computed += 1
            for seq, take in planned:
                seq.computed += take
                self._save_prefix(seq)
            completed = [i for i, (seq, _) in enumerate(planned) if seq.computed == len(seq.prompt_ids)]
            sampled = running + [planned[i][0] for i in completed]
            wanted = list(range(len(running))) + [len(running) + i for i in completed]
            if sampled:
                choices = self._sample(logits if len(wanted) == len(logits) else logits[wanted], sampled)
            else:
                choices = []
            for i, (seq, choice) in enumerate(zip(sampled, choices)):
                if isinstance(choice, Exception):  # its sampling failed alone: it ends, the others go on
                    outputs.append(self._fail(seq, choice))
                    continue
                if i >= len(running):  # its prompt is complete: it joins the decoding rows
                    self.prefilling.remove(seq)
                    self._join_decoding(seq)
                outputs.append(self._accept(seq, choice))
        self.last_batch_size = len(outputs)
        if not any(s is not None for s in self.rows):
            self.rows, self.decoding = [], 0
        return outputs

    def idle(self) -> None:
        """Free the KV cache while nothing runs. Engines call this once they have had no work for a moment,
        so a burst that follows another keeps the cache instead of allocating it again row by row."""
        if not self.has_work():
            self.runner.release()
            trim_heap()

    def _admit(self) -> None:
        while self.waiting and sum(s is not None for s in self.rows) < self.max_num_seqs:
            seq = self.waiting.popleft()
            if seq.aborted:
                continue
            row = next((r for r in range(self.decoding, len(self.rows)) if self.rows[r] is None), len(self.rows))
            if row == len(self.rows):
                self.rows.append(None)
            self.runner.ensure(len(self.rows), self._room_for(len(seq.prompt_ids) + 1))
            seq.row = row
            seq.scheduled_at = time.time()
            self.rows[row] = seq
            if self.prefix_cache is not None:
                seq.keys = block_keys(seq.prompt_ids, self.prefix_cache.block_size)
            self.prefilling.append(seq)

    def _room_for(self, length: int) -> int:
        return min(self.context_length, length)

    def _load_prefix(self, seq: ScheduledSequence) -> None:
        """Load the longest cached prefix of ``seq``'s prompt into its row (before any of it is computed)."""
        seq.looked_up = True
        cache = self.prefix_cache
        if cache is None:
            return
        blocks, tokens = cache.lookup(seq.keys, seq.prompt_ids)
        self.runner.load_blocks(blocks, seq.row, 0, tokens)
        seq.saved = tokens // cache.block_size
        seq.computed = tokens

    def _save_prefix(self, seq: ScheduledSequence) -> None:
        """Save the prompt blocks of ``seq`` computed since the last save."""
        cache = self.prefix_cache
        if cache is None:
            return
        size = cache.block_size
        done = min(len(seq.keys), seq.computed // size)
        for i in range(seq.saved, done):
            if seq.keys[i] not in cache:
                block, nbytes = self.runner.save_block(seq.row, i * size, size)
                previous = seq.keys[i - 1] if i else 0
                cache.save(seq.keys[i], seq.prompt_ids[i * size : (i + 1) * size], block, nbytes, previous)
        seq.saved = done  # never below: computed only grows, and the loaded blocks were already computed

    def _waits_for_a_block(self, seq: ScheduledSequence, computing: set[int]) -> bool:
        """Whether the first block ``seq`` would compute is one a prompt ahead of it is computing."""
        cache = self.prefix_cache
        if cache is None:
            return False
        loadable = seq.keys[: (len(seq.prompt_ids) - 1) // cache.block_size]  # as ``PrefixCache.lookup`` caps it
        found = cache.depth(loadable)
        return found < len(loadable) and loadable[found] in computing

    def _plan_prefill(self) -> list[tuple[ScheduledSequence, int]]:
        """Prompt chunks for this step, oldest sequence first, up to the token budget: (sequence, tokens).
        A prompt not started yet loads its cached prefix first, or waits while a prompt ahead of it
        computes the block it would compute next."""
        planned = []
        budget = self.prefill_tokens
        computing: set[int] = set()  # keys of the blocks prompts ahead in the queue have still to compute
        size = self.prefix_cache.block_size if self.prefix_cache is not None else 1
        for seq in self.prefilling:
            if budget <= 0:
                break
            if not seq.looked_up:
                if self._waits_for_a_block(seq, computing):
                    continue
                self._load_prefix(seq)
            computing.update(seq.keys[seq.computed // size :])
            take = min(budget, len(seq.prompt_ids) - seq.computed)
            planned.append((seq, take))
            budget -= take
        return planned

    def _forward(
        self, running: list[ScheduledSequence], planned: list[tuple[ScheduledSequence, int]]
    ) -> tuple[Any, list[tuple[ScheduledSequence, int]], list[StepOutput]]:
        """One forward pass over the decoding rows and the planned prompt chunks: (logits, the chunks it
        carried, the outputs of sequences that failed). Where the pass raises, each new prompt chunk is run
        alone to find the ones that fail; those sequences end with their own error and the pass runs again
        without them, so one bad prompt never fails the rows beside it. (A pass writes each token's keys and
        values at its own position, so running a chunk again rewrites the same cache entries.) A pass of
        decoding rows alone that raises is the engine's failure, raised to its caller."""

        def chunk(seq: ScheduledSequence, take: int) -> Chunk:
            return Chunk(seq.row, seq.prompt_ids[seq.computed : seq.computed + take], seq.computed)

        tokens, positions = [s.pending for s in running], [s.computed for s in running]
        try:
            return self.runner.forward(tokens, positions, [chunk(s, t) for s, t in planned]), planned, []
        except Exception:
            if not planned:
                raise
            failed: list[tuple[ScheduledSequence, Exception]] = []
            for seq, take in planned:
                try:
                    self.runner.forward([], [], [chunk(seq, take)])
                except Exception as exc:
                    failed.append((seq, exc))
            if not failed:
                raise
        gone = {id(seq) for seq, _ in failed}
        kept = [(seq, take) for seq, take in planned if id(seq) not in gone]
        outputs = [self._fail(seq, exc) for seq, exc in failed]
        if not running and not kept:
            return None, [], outputs
        return self.runner.forward(tokens, positions, [chunk(s, t) for s, t in kept]), kept, outputs

    def _fail(self, seq: ScheduledSequence, exc: Exception) -> StepOutput:
        """End ``seq`` alone with the error its own step raised (the engine reports it to its request only)."""
        seq.error = f"{type(exc).__name__}: {exc}"
        return self._finish(seq, "error", "")

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

    # ------------------------------------------------------------------ tokens -> text
    def _accept(self, seq: ScheduledSequence, choice: TokenChoice) -> StepOutput:
        """Record a sampled token: text, stop strings, EOS, a completed grammar and length limits; free
        the row when done."""
        assert seq.detokenizer is not None and seq.stopper is not None
        token = choice.token
        logged = choice if seq.params.logprobs is not None else None
        if token in self.eos_ids and (not seq.params.ignore_eos or seq.matcher is not None):
            return self._finish(seq, "stop", self._final_text(seq))
        seq.generated.append(token)
        seq.pending = token
        text, hit = seq.stopper.feed(seq.detokenizer.add(token))
        seq.text += text
        if hit:
            return self._finish(seq, "stop", text, logged)
        if seq.matcher is not None:
            seq.matcher.consume_token(token)
            if seq.matcher.is_error():
                return self._fail(seq, _grammar_error(seq.matcher))
            if seq.matcher.is_stopped():  # the grammar is complete: nothing may follow
                return self._finish(seq, "stop", text + self._final_text(seq), logged)
        if (
            len(seq.generated) >= seq.params.max_tokens
            or len(seq.prompt_ids) + len(seq.generated) >= self.context_length
        ):
            return self._finish(seq, "length", text + self._final_text(seq), logged)
        return StepOutput(seq, text, False, logged)

    def _final_text(self, seq: ScheduledSequence) -> str:
        assert seq.detokenizer is not None and seq.stopper is not None
        tail, hit = seq.stopper.feed(seq.detokenizer.flush())
        rest = "" if hit else seq.stopper.flush()
        seq.text += tail + rest
        return tail + rest

    def _finish(
        self, seq: ScheduledSequence, reason: str, text: str, choice: Optional[TokenChoice] = None
    ) -> StepOutput:
        seq.finish_reason = reason
        self._free(seq)
        return StepOutput(seq, text, True, choice)

    # ------------------------------------------------------------------ rows
    def _join_decoding(self, seq: ScheduledSequence) -> None:
        """Move a sequence whose prompt is cached to row ``decoding`` (swapping with whoever is there)."""
        target = self.decoding
        if seq.row != target:
            other = self.rows[target]
            if other is None:
                self.runner.move(seq.row, target, seq.computed)
                self.rows[seq.row] = None
            else:
                self.runner.swap(seq.row, target, max(seq.computed, other.computed))
                self.rows[seq.row], other.row = other, seq.row
            self.rows[target], seq.row = seq, target
        self.decoding += 1

    def _free(self, seq: ScheduledSequence) -> None:
        """Give a sequence's row back; the last decoding row moves into a hole it leaves."""
        row = seq.row
        if row < 0:
            return
        seq.row = -1
        if row >= self.decoding:  # still prefilling
            self.rows[row] = None
            if seq in self.prefilling:
                self.prefilling.remove(seq)
            return
        last = self.decoding - 1
        if row != last:
            moved = self.rows[last]
            assert moved is not None
            self.runner.move(last, row, moved.computed)
            self.rows[row], moved.row = moved, row
        self.rows[last] = None
        self.decoding -= 1


def _grammar_error(matcher: Any) -> ValueError:
    """The error a sequence ends with when its grammar's matcher failed (past its limits)."""
    return ValueError(f"the output grammar failed: {matcher.get_error().splitlines()[0]}")
