"""Liveness and information: /health, /ping (MLflow's), /version, /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from servelm.agents import __version__

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> Response:
    """200 ``{"status": "ok"}`` when the model serves; 503 with ``status`` loading / error and the reason."""
    state = request.app.state.servelm
    status = state.status
    if status == "ok":
        return JSONResponse({"status": "ok"})
    detail = state.load_error or "loading" if state.service is None else state.service.health_error()
    return JSONResponse({"status": status, "detail": detail}, status_code=503)


@router.get("/ping")
async def ping(request: Request) -> Response:
    return PlainTextResponse("\n", status_code=200 if request.app.state.servelm.status == "ok" else 503)


@router.get("/version")
async def version() -> Response:
    return PlainTextResponse(__version__)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.servelm.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
