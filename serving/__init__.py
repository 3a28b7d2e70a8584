"""Serving: the OpenAI-compatible HTTP server, its engines and the ``servelm`` CLI."""

from typing import Any


def create_app(model_or_path: Any, *args: Any, **options: Any) -> Any:
    """The FastAPI app serving one model (see ``servelm.serving.app.create_app``)."""
    from .app import create_app as _create_app

    return _create_app(model_or_path, *args, **options)


__all__ = ["create_app"]
