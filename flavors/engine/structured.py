"""Grammar-constrained decoding with llguidance: the output of a sequence with ``SamplingParams.guided``
always follows its grammar (a JSON schema, any JSON object, a regex, a Lark grammar).

``Grammars`` belongs to one tokenizer: it compiles each distinct grammar once and hands every sequence a
copy of that matcher. Each step the scheduler asks every constrained sequence for its bitmask of allowed
tokens (one bit per vocabulary entry, llguidance's int32 layout), the runner masks those rows' logits,
and the sampled token is fed back to the matcher. Unconstrained rows pay nothing.

Near its token limit a constrained sequence prefers, among the allowed tokens, the end of the output,
then tokens that close what is open (a quote, a brace, a bracket), then separators (so a required key
that is still missing comes next): even a model that would ramble (a random test model) ends with
complete, valid JSON.
"""

from __future__ import annotations

import functools
import json
import threading
from collections import OrderedDict
from typing import Any, Optional

import numpy as np

from .sample.params import GuidedDecoding

CLOSING_MARGIN = 40  # tokens before the limit from which a constrained sequence prefers closing tokens (at least)


def closing(max_tokens: int, generated: int) -> bool:
    """Whether a constrained sequence is near enough its limit to prefer closing what is open: within
    ``CLOSING_MARGIN`` tokens of it, or within its last fifth for long answers."""
    return max_tokens - generated <= max(CLOSING_MARGIN, max_tokens // 5)


_COMPACT_JSON: Any = {"whitespace_flexible": False}  # llguidance's JsonCompileOptions


def grammar_text(spec: GuidedDecoding) -> str:
    """llguidance's grammar for a spec (raises ValueError with a readable message when it is invalid)."""
    import llguidance

    if spec.kind == "json_schema":
        return str(llguidance.LLMatcher.grammar_from_json_schema(spec.value, defaults=_COMPACT_JSON))
    if spec.kind == "json_object":
        return str(
            llguidance.LLMatcher.grammar_from_json_schema(json.dumps({"type": "object"}), defaults=_COMPACT_JSON)
        )
    if spec.kind == "regex":
        return str(llguidance.LLMatcher.grammar_from_regex(spec.value))
    if spec.kind == "lark":
        return str(llguidance.LLMatcher.grammar_from_lark(spec.value))
    raise ValueError(f"unknown grammar kind {spec.kind!r}")


def lark_text(spec: GuidedDecoding) -> str:
    """The spec as one Lark grammar (llguidance's dialect: ``%json`` for schemas, compact as servelm's own engines
    write JSON), for engines that take grammars as text (vLLM's guidance backend, llama.cpp's llguidance)."""
    if spec.kind in ("json_schema", "json_object"):
        schema = json.loads(spec.value) if spec.kind == "json_schema" else {"type": "object"}
        return "start: %json " + json.dumps({**schema, "x-guidance": _COMPACT_JSON})
    if spec.kind == "regex":
        return "start: /" + spec.value.replace("/", "\\/") + "/"
    if spec.kind == "lark":
        return spec.value
    raise ValueError(f"unknown grammar kind {spec.kind!r}")


def check_grammar(spec: GuidedDecoding) -> Optional[str]:
    """Why ``spec`` cannot be compiled (for a 400 before generating), or None."""
    try:
        import llguidance
    except ImportError:
        return "structured outputs need llguidance: pip install llguidance"
    try:
        return str(llguidance.LLMatcher.validate_grammar(grammar_text(spec))).strip() or None  # "" when valid
    except (ValueError, RuntimeError) as exc:
        return str(exc)


def heap_bytes() -> int:
    """Bytes allocated on the C heap now: glibc's ``mallinfo2``, the main arena's allocated bytes plus the large
    blocks mapped on their own (0 where it cannot be read: other C libraries, other systems). Differences around
    a call on the main thread (the engine process's stepping thread) show what the call kept."""
    info = _mallinfo()
    if info is None:
        return 0
    now = info()
    return int(now.uordblks + now.hblkhd)


@functools.cache
def _mallinfo() -> Any:
    import ctypes
    import ctypes.util

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks")
        ] + [(name, ctypes.c_size_t) for name in ("fordblks", "keepcost")]

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = MallInfo2
    return function


def tokenizer_json(tokenizer: Any) -> str:
    """The tokenizers-library JSON of a tokenizer (a transformers fast tokenizer or a ``tokenizers.Tokenizer``)."""
    import copy

    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not hasattr(backend, "to_str"):
        raise ValueError("structured outputs need a fast (tokenizers-backed) tokenizer")
    backend = copy.copy(backend)
    backend.no_padding()
    backend.no_truncation()
    return str(backend.to_str())


#: lexer states one grammar may build (llguidance's limit, 250 000 by default, is 1-2 kB a state: a hostile
#: pattern such as ``(x{1000}){1000}`` would take hundreds of MB, and each step's mask computation time with
#: them). A schema of eight fields with email, date-time, uuid and pattern formats decodes within 1000 on
#: SmolLM2's vocabulary; past this cap a grammar's sequence fails with the error.
LEXER_STATES = 5_000
#: bytes of heap the cached grammars may hold together (what their lexers grew to while computing masks)
CACHE_BYTES = 256 * 1024 * 1024


class Grammars:
    """Compiled grammars for one tokenizer (``tokenizer_json``: its tokenizers JSON), least recently used
    first out past ``capacity`` entries or ``max_bytes`` of heap. Safe to use from the one thread that steps
    the scheduler.

    llguidance builds a grammar's lexer lazily, while it computes masks: that is where a grammar's memory (and
    time) goes. Each grammar is capped at ``LEXER_STATES`` states (past it, its sequence fails with the error);
    the heap a mask computation grows by (glibc's count of allocated bytes, where it can be read) is charged to
    its grammar's cache entry, and entries are evicted until the cache holds at most ``max_bytes``. Running
    sequences keep their copies; an evicted grammar's memory is freed when the last of them ends.
    """

    def __init__(
        self,
        tokenizer_json: str,
        vocab_size: int,
        eos_ids: set[int],
        capacity: int = 64,
        max_bytes: int = CACHE_BYTES,
    ):
        import llguidance

        self.llg = llguidance
        self.vocab_size = vocab_size
        self.tokenizer = llguidance.LLTokenizer(tokenizer_json, n_vocab=vocab_size, eos_token=sorted(eos_ids) or None)
        self.limits = llguidance.LLParserLimits(max_lexer_states=LEXER_STATES)
        self._prototypes: OrderedDict[GuidedDecoding, list[Any]] = OrderedDict()  # spec -> [matcher, heap bytes]
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0  # heap charged to the cached grammars
        self.compiled = 0  # grammars compiled (a cached one is copied, not compiled)
        self._closers: Optional[list[np.ndarray]] = None
        self._lock = threading.Lock()

    def matcher(self, spec: GuidedDecoding) -> Any:
        """A fresh matcher for ``spec`` (a copy of the cached compiled one)."""
        with self._lock:
            entry = self._prototypes.get(spec)
            if entry is None:
                before = heap_bytes()
                prototype = self.llg.LLMatcher(self.tokenizer, grammar_text(spec), limits=self.limits)
                error = prototype.get_error()
                if error:
                    raise ValueError(f"the grammar cannot be compiled: {error}")
                self.compiled += 1
                entry = self._prototypes[spec] = [prototype, 0]
                self._charge(spec, heap_bytes() - before)
            else:
                self._prototypes.move_to_end(spec)
            return entry[0].deep_copy()

    def _charge(self, spec: Optional[GuidedDecoding], grown: int) -> None:
        """Add ``grown`` heap bytes to ``spec``'s entry (if it is still cached), then evict the least recently
        used entries past the bounds."""
        entry = self._prototypes.get(spec) if spec is not None else None
        if entry is not None and grown > 0:
            entry[1] += grown
            self.bytes += grown
        while self._prototypes and (len(self._prototypes) > self.capacity or self.bytes > self.max_bytes):
            _, (_, held) = self._prototypes.popitem(last=False)
            self.bytes -= held

    def allowed(
        self, matchers: list[Any], closing: list[bool], specs: Optional[list[Optional[GuidedDecoding]]] = None
    ) -> np.ndarray:
        """Boolean masks [rows, vocab] of the tokens each matcher allows next; a row in ``closing`` keeps
        the first non-empty of: its end tokens, its closing tokens, its separators (else all it allows).
        ``specs`` (each matcher's grammar) charge what computing the masks grew the heap by to the cache."""
        import llguidance.numpy as lln

        words = lln.allocate_token_bitmask(len(matchers), self.vocab_size)  # [rows, ceil(vocab / 32)] int32
        for row, matcher in enumerate(matchers):
            before = heap_bytes() if specs is not None else 0
            lln.fill_next_token_bitmask(matcher, words, row)
            if specs is not None:
                with self._lock:
                    self._charge(specs[row], heap_bytes() - before)
        bits = np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")[:, : self.vocab_size].astype(
            bool
        )  # [rows, vocab]
        for row, close in enumerate(closing):
            if close:
                for preferred in self.preferences():
                    narrowed = bits[row] & preferred
                    if narrowed.any():
                        bits[row] = narrowed
                        break
        return bits

    def preferences(self) -> list[np.ndarray]:
        """Token sets a closing row prefers, in order: end of sequence; a quote (ends a string, maybe
        followed by closing braces and brackets); closing braces and brackets; those with commas or colons."""
        if self._closers is None:
            eos = np.zeros(self.vocab_size, dtype=bool)
            eos[[t for t in self.tokenizer.eos_tokens if t < self.vocab_size]] = True
            quotes, closers, steps = (np.zeros(self.vocab_size, dtype=bool) for _ in range(3))
            for token in range(min(self.vocab_size, self.tokenizer.vocab_size)):
                text = self.tokenizer.decode_str([token]).strip()
                chars = set(text)
                quotes[token] = text.startswith('"') and chars <= set('"}]')
                closers[token] = bool(chars) and chars <= set("}]")
                steps[token] = bool(chars) and chars <= set('"}],:')
            self._closers = [eos, quotes, closers, steps]
        return self._closers
