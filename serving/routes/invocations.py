"""``POST /invocations``: MLflow's scoring endpoint (its request formats in ``serving/scoring_input.py``)."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ..errors import APIError
from ..flow import run_json, run_stream
from ..framing import dumps
from ..http import check_api_key, read_json
from ..scoring_input import parse_invocation
from ..services.base import INVOCATIONS
from ..state import ServerState

router = APIRouter()


@router.post("/invocations")
async def invocations(request: Request) -> Response:
    state: ServerState = request.app.state.servelm
    check_api_key(request, state.server.api_key)
    service = state.ready()
    service.require(INVOCATIONS)
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type not in ("application/json", ""):
        raise APIError(415, f"content type {content_type!r} is not supported; send application/json", code="unsupported_media_type")
    invocation = parse_invocation(await read_json(request, state.server.max_body_bytes))
    if invocation.stream:

        async def events() -> AsyncIterator[dict[str, Any]]:
            async for item in service.invoke_stream(invocation.data, invocation.params):
                yield {"data": json.dumps(item, default=json_default, separators=(",", ":"))}

        def error_events(exc: APIError) -> list[dict[str, Any]]:
            return [{"event": "error", "data": dumps(exc.body())}]

        return await run_stream(request, state, events(), error_events)

    async def answer() -> Any:
        result = jsonable(await service.invoke(invocation.data, invocation.params))
        return result if invocation.raw else {"predictions": result}

    return await run_json(request, state, answer)


def json_default(obj: Any) -> Any:
    """JSON for what models return besides plain types: pydantic models, numpy, pandas, datetimes, bytes."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(exclude_none=True)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict(orient="records")
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if isinstance(obj, (bytes, bytearray)):
        import base64

        return base64.b64encode(bytes(obj)).decode()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def jsonable(result: Any) -> Any:
    """``result`` as plain JSON data."""
    if isinstance(result, (dict, list, str, int, float, bool)) or result is None:
        return result
    return json.loads(json.dumps(result, default=json_default))
