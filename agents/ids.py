"""Identifiers and timestamps for protocol objects (OpenAI style: prefix + random hex)."""

from __future__ import annotations

import os
import time


def new_id(prefix: str) -> str:
    """A fresh OpenAI-style id, random, not time-ordered: ``chatcmpl-9f3c...`` and ``cmpl-...`` for
    completions, ``resp_...``, ``msg_...``, ``fc_...``, ``call_...`` for the rest (OpenAI's separators)."""
    return f"{prefix}{'-' if prefix in ('chatcmpl', 'cmpl') else '_'}{os.urandom(12).hex()}"


def now_seconds() -> int:
    """Unix time in whole seconds, the unit OpenAI uses for ``created``."""
    return int(time.time())
