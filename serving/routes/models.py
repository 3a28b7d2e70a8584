"""``GET /v1/models`` and ``GET /v1/models/{id}``: the models this server serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..http import check_api_key
from ..state import ServedModel, ServerState

router = APIRouter()


def model_card(state: ServedModel) -> dict[str, Any]:
    """The model as OpenAI lists it, plus ``task`` (its kind, or ``loading`` / ``error``) and ``max_model_len``."""
    service = state.service
    task = service.kind if service is not None else state.status
    card: dict[str, Any] = {
        "id": state.name,
        "object": "model",
        "created": state.created,
        "owned_by": "servelm",
        "task": task,
    }
    context = getattr(getattr(service, "engine", None), "context_length", None)
    if context:
        card["max_model_len"] = context
    return card


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    state: ServerState = request.app.state.servelm
    check_api_key(request, state.server.api_key)
    return JSONResponse({"object": "list", "data": [model_card(served) for served in state.models.values()]})


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> Response:
    state: ServerState = request.app.state.servelm
    check_api_key(request, state.server.api_key)
    return JSONResponse(model_card(state.model(model_id or "-")))
