"""Server settings: what ``servelm serve`` flags and ``create_app(**settings)`` accept."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional


@dataclass
class ServerSettings:
    """Limits, auth and naming of one server. Times in seconds, sizes in bytes."""

    served_model_name: Optional[str] = None
    api_key: Optional[str] = field(default_factory=lambda: os.environ.get("SERVELM_API_KEY") or None)
    max_concurrency: int = 64  # requests running at once
    max_queue: int = 256  # requests waiting for a slot before 429
    timeout: float = 600.0  # seconds per request
    max_body_bytes: int = 16 * 1024 * 1024
    max_threads: int = 32  # worker threads for sync agent code
    engine: Optional[str] = None  # force an engine: pyfunc, transformers, onnx, vllm
    engine_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if self.max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        if self.timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "ServerSettings":
        """Settings from keyword arguments; unknown names are an error that lists the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown server setting(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: v for k, v in kwargs.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
