"""Liveness and information: /health, /ping (MLflow's), /version, /metrics (Prometheus)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from servelm.agents import __version__

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> Response:
    """200 ``{"status": "ok"}`` when every model serves; 503 with ``status`` loading / error and the reason.
    A server of several models adds ``models``: each one's status (and reason)."""
    state = request.app.state.servelm
    status = state.status
    body: dict[str, Any] = {"status": status}
    if status != "ok":
        body["detail"] = "; ".join(
            f"{m.name}: {m.detail()}" if len(state.models) > 1 else str(m.detail())
            for m in state.models.values()
            if m.status != "ok"
        )
    if len(state.models) > 1:
        body["models"] = {
            m.name: {"status": m.status, **({"detail": m.detail()} if m.status != "ok" else {})}
            for m in state.models.values()
        }
    return JSONResponse(body, status_code=200 if status == "ok" else 503)


@router.get("/ping")
async def ping(request: Request) -> Response:
    return PlainTextResponse("\n", status_code=200 if request.app.state.servelm.status == "ok" else 503)


@router.get("/version")
async def version() -> Response:
    return PlainTextResponse(__version__)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.servelm.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
