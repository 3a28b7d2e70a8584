"""Identifiers and timestamps for protocol objects (OpenAI style: prefix + random hex)."""

from __future__ import annotations

import os
import time


def new_id(prefix: str) -> str:
    """A fresh OpenAI-style id such as ``chatcmpl-9f3c...``; random, not time-ordered."""
    return f"{prefix}-{os.urandom(12).hex()}"


def now_seconds() -> int:
    """Unix time in whole seconds, the unit OpenAI uses for ``created``."""
    return int(time.time())
