"""The batcher side of the thread and process engines: a flavor's ``Batcher`` and the requests riding on it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Optional

from servelm.flavors.engine import SamplingParams

from .base import Delta

log = logging.getLogger("servelm.engine")

IDLE_SECONDS = 1.0  # seconds without work after which an engine lets its batcher free its KV cache


class BatcherDriver:
    """A batcher and the requests riding on it, keyed by request id: add, abort, and one step that
    returns each request's Delta (token ids: the reader makes the text). A step that raises fails the
    requests it held (not the server) and starts over with a fresh batcher. Used on whichever thread or
    process owns the batcher."""

    def __init__(self, make_batcher: Callable[[], Any]):
        self.make_batcher = make_batcher
        self.batcher = make_batcher()
        self._rids: dict[int, int] = {}  # batcher seq_id -> request id
        self._seqs: dict[int, Any] = {}  # request id -> batcher sequence
        self._unreported: set[int] = set()  # request ids whose first Delta (with its scheduling time) is still to come

    def add(self, rid: int, prompt_ids: list[int], params: SamplingParams) -> Optional[Delta]:
        """Queue a request; a Delta with the error when the batcher refuses it (e.g. a prompt too long)."""
        try:
            seq = self.batcher.add(prompt_ids, params)
        except ValueError as exc:
            return Delta("", True, "error", error=str(exc))
        self._rids[seq.seq_id] = rid
        self._seqs[rid] = seq
        self._unreported.add(rid)
        return None

    def abort(self, rid: int) -> None:
        """Free a request's row at the next step (nothing if it already finished)."""
        seq = self._seqs.pop(rid, None)
        self._unreported.discard(rid)
        if seq is not None:
            self._rids.pop(seq.seq_id, None)
            self.batcher.abort(seq)

    def has_work(self) -> bool:
        return bool(self.batcher.has_work())

    def idle(self) -> None:
        """The engine has had no work for ``IDLE_SECONDS``: the batcher may free its cache."""
        self.batcher.idle()

    def step(self) -> tuple[int, list[tuple[int, Delta]]]:
        """One batcher step: (sequences in it, [(request id, Delta)])."""
        try:
            outputs = self.batcher.step()
        except Exception as exc:  # a broken step fails its requests, not the server
            log.exception("engine step failed")
            return 0, self.fail_all(f"{type(exc).__name__}: {exc}")
        items = []
        for out in outputs:
            rid = self._rids.get(out.seq.seq_id)
            if rid is None:
                continue
            if out.finished and out.seq.error:  # this sequence failed in the step, alone: its request ends with it
                delta = Delta("", True, None, len(out.seq.generated), error=out.seq.error, token_ids=out.token_ids)
            else:
                delta = Delta(
                    "",
                    out.finished,
                    out.seq.finish_reason,
                    len(out.seq.generated),
                    logprobs=[out.choice] if out.choice is not None else None,
                    token_ids=out.token_ids,
                )
            if rid in self._unreported:
                self._unreported.discard(rid)
                delta.scheduled_at = getattr(out.seq, "scheduled_at", None)
            items.append((rid, delta))
            if out.finished:
                self._unreported.discard(rid)
                del self._rids[out.seq.seq_id]
                self._seqs.pop(rid, None)
        return (self.batcher.last_batch_size if outputs else 0), items

    def fail_all(self, message: str) -> list[tuple[int, Delta]]:
        """End every request with an error and start a fresh batcher (the old one's state is suspect)."""
        failed = [(rid, Delta("", True, None, error=message)) for rid in self._seqs]
        self._rids.clear()
        self._seqs.clear()
        self._unreported.clear()
        try:
            self.batcher = self.make_batcher()
        except Exception:
            log.exception("could not rebuild the batcher after a failed step")
        return failed
