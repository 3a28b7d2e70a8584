"""``GET /v1/models`` and ``GET /v1/models/{id}``: the one model this server serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import APIError
from ..http import check_api_key
from ..state import ServerState

router = APIRouter()


def model_card(state: ServerState) -> dict[str, Any]:
    """The model as OpenAI lists it, plus ``task`` (its kind, or ``loading`` / ``error``) and ``max_model_len``."""
    service = state.service
    task = service.kind if service is not None else state.status
    card: dict[str, Any] = {
        "id": state.model_name,
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
    return JSONResponse({"object": "list", "data": [model_card(state)]})


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> Response:
    state: ServerState = request.app.state.servelm
    check_api_key(request, state.server.api_key)
    if model_id != state.model_name:
        raise APIError(
            404,
            f"The model `{model_id}` does not exist; this server serves `{state.model_name}`.",
            param="model",
            code="model_not_found",
        )
    return JSONResponse(model_card(state))
