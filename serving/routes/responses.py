"""``POST /v1/responses``: OpenAI's Responses API."""

from __future__ import annotations

import time
from typing import Any, AsyncIterator

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from servelm.agents import ResponsesAgentRequest

from ..errors import APIError
from ..flow import run_json, run_stream
from ..framing import dumps
from ..http import check_api_key, parse_body, read_json
from ..services.base import RESPONSES
from ..state import ServerState

router = APIRouter()


@router.post("/v1/responses")
async def responses(request: Request) -> Response:
    state: ServerState = request.app.state.servelm
    check_api_key(request, state.server.api_key)
    service = state.ready()
    body = parse_body(ResponsesAgentRequest, await read_json(request, state.server.max_body_bytes))
    state.check_model(body.model)
    service.require(RESPONSES)
    if body.stream:
        sequence = {"n": 0}

        async def events() -> AsyncIterator[dict[str, Any]]:
            async for event in service.responses_stream(body, state.model_name):
                sequence["n"] = event.get("sequence_number", sequence["n"]) + 1
                yield {"event": event["type"], "data": dumps(event)}

        def error_events(exc: APIError) -> list[dict[str, Any]]:
            error = {"type": "error", "code": exc.code, "message": exc.message, "param": exc.param, "sequence_number": sequence["n"]}
            failed = {"type": "response.failed", "sequence_number": sequence["n"] + 1,
                      "response": {"id": "resp-failed", "object": "response", "created_at": time.time(), "status": "failed", "model": state.model_name,
                                   "output": [], "error": {"code": exc.code or "server_error", "message": exc.message}, "parallel_tool_calls": True,
                                   "tool_choice": "auto", "tools": []}}
            return [{"event": "error", "data": dumps(error)}, {"event": "response.failed", "data": dumps(failed)}]

        return await run_stream(request, state, events(), error_events)

    async def answer() -> Any:
        return await service.responses(body, state.model_name)

    return await run_json(request, state, answer)
