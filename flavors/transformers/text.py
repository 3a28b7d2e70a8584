"""Turning generated token ids into text as it streams (the shared implementations live in
``servelm.flavors.generation``)."""

from __future__ import annotations

from ..generation import IncrementalDetokenizer, StopChecker

__all__ = ["IncrementalDetokenizer", "StopChecker"]
