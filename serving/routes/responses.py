"""``POST /v1/responses`` (OpenAI's Responses API), and stored responses: ``GET`` / ``DELETE
/v1/responses/{id}`` and ``GET /v1/responses/{id}/input_items``.

A request naming ``previous_response_id`` continues that response's conversation (its input and output
come first). Every response echoes the request's options, as OpenAI's do, and is stored unless the
request says ``store: false`` (serving/responses_store.py says what that store keeps).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from servelm.agents import ResponsesAgentRequest
from servelm.agents.responses_types import ResponsesItem

from ..errors import APIError
from ..flow import accept, run_json, run_stream
from ..framing import dumps
from ..http import check_api_key
from ..services.base import RESPONSES
from ..state import ServerState

router = APIRouter()
_DEFAULTS: dict[str, Any] = {
    "tools": [],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "text": {"format": {"type": "text"}},
    "store": True,
    "truncation": "disabled",
    "metadata": {},
    "temperature": 1.0,
    "top_p": 1.0,
    "instructions": None,
    "max_output_tokens": None,
    "previous_response_id": None,
    "reasoning": None,
    "user": None,
    "top_logprobs": None,
}


def refuse_unsupported_options(body: ResponsesAgentRequest) -> None:
    """400 for Responses options this server cannot honour: background mode (responses are answered in
    the request) and ``truncation: "auto"`` (a conversation past the context is refused, not cut)."""
    if body.background:
        raise APIError(
            400,
            "background: responses are answered within the request here; omit background or set it to false",
            param="background",
            code="unsupported_parameter",
        )
    if body.truncation not in (None, "disabled"):
        raise APIError(
            400,
            f"truncation: only 'disabled' is supported here; got {body.truncation!r}",
            param="truncation",
            code="unsupported_value",
        )


@router.post("/v1/responses")
async def responses(request: Request) -> Response:
    served, service, body = await accept(request, ResponsesAgentRequest, RESPONSES)
    state = served.state
    refuse_unsupported_options(body)
    inputs = [item.model_dump(exclude_none=True) for item in body.input]
    if body.previous_response_id:
        history = state.responses.conversation(body.previous_response_id)
        if history is None:
            raise APIError(
                400,
                f"Previous response with id '{body.previous_response_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        inputs = history + inputs
        body = body.model_copy(update={"input": [ResponsesItem.model_validate(item) for item in inputs]})
    keep = body.store is not False

    def finished(response: dict[str, Any]) -> dict[str, Any]:
        echo_request(response, body)
        if keep:
            state.responses.save(response, inputs)
        return response

    if body.stream:
        sequence = {"n": 0}

        async def events() -> AsyncIterator[dict[str, Any]]:
            async for event in service.responses_stream(body, served.name):
                sequence["n"] = event.get("sequence_number", sequence["n"]) + 1
                if isinstance(event.get("response"), dict):
                    if event["type"] in ("response.completed", "response.incomplete"):
                        finished(event["response"])
                    else:
                        echo_request(event["response"], body)
                yield {"event": event["type"], "data": dumps(event)}

        def error_events(exc: APIError) -> list[dict[str, Any]]:
            error = {
                "type": "error",
                "code": exc.code,
                "message": exc.message,
                "param": exc.param,
                "sequence_number": sequence["n"],
            }
            failed = {
                "type": "response.failed",
                "sequence_number": sequence["n"] + 1,
                "response": echo_request(
                    {
                        "id": "resp-failed",
                        "object": "response",
                        "created_at": time.time(),
                        "status": "failed",
                        "model": served.name,
                        "output": [],
                        "error": {"code": exc.code or "server_error", "message": exc.message},
                    },
                    body,
                ),
            }
            return [{"event": "error", "data": dumps(error)}, {"event": "response.failed", "data": dumps(failed)}]

        return await run_stream(request, served, events(), error_events)

    async def answer() -> Any:
        return finished(await service.responses(body, served.name))

    return await run_json(request, served, answer)


@router.get("/v1/responses/{response_id}")
async def retrieve(response_id: str, request: Request) -> Response:
    state: ServerState = request.app.state.servelm
    check_api_key(request, state.server.api_key)
    return JSONResponse(_stored(state, response_id))


@router.get("/v1/responses/{response_id}/input_items")
async def input_items(response_id: str, request: Request) -> Response:
    state: ServerState = request.app.state.servelm
    check_api_key(request, state.server.api_key)
    _stored(state, response_id)
    items = [
        {"id": item.get("id") or f"item_{i}", **item}
        for i, item in enumerate(state.responses.input_items(response_id) or [])
    ]
    return JSONResponse(
        {
            "object": "list",
            "data": items,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None,
            "has_more": False,
        }
    )


@router.delete("/v1/responses/{response_id}")
async def delete(response_id: str, request: Request) -> Response:
    state: ServerState = request.app.state.servelm
    check_api_key(request, state.server.api_key)
    _stored(state, response_id)
    state.responses.delete(response_id)
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})


def _stored(state: ServerState, response_id: str) -> dict[str, Any]:
    response = state.responses.get(response_id)
    if response is None:
        raise APIError(
            404, f"No response with id '{response_id}' is stored here", param="response_id", code="not_found"
        )
    return response


def echo_request(response: dict[str, Any], request: ResponsesAgentRequest) -> dict[str, Any]:
    """Set the request's options on a response object, as OpenAI's Response carries them."""
    extra = request.model_extra or {}
    for name, default in _DEFAULTS.items():
        value = getattr(request, name, None) if name in ResponsesAgentRequest.model_fields else extra.get(name)
        if value is not None:
            response[name] = value
        elif response.get(name) is None:
            response[name] = default
    return response
