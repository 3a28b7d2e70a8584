"""The HTTP routes, one module per API: thin functions that parse, check and hand typed requests to the
model's service through the shared request flow (``serving/flow.py``)."""

from fastapi import FastAPI

from . import chat, completions, health, invocations, models, responses

#: paths counted by name in /metrics (anything else counts as "other")
ROUTES = {
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/models",
    "/invocations",
    "/health",
    "/ping",
    "/version",
    "/metrics",
}


def include_routes(app: FastAPI) -> None:
    """Mount every route on ``app``."""
    for module in (health, models, chat, completions, responses, invocations):
        app.include_router(module.router)


__all__ = ["ROUTES", "include_routes"]
