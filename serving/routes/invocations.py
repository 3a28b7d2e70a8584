"""``POST /invocations``: MLflow's scoring endpoint (its request formats in ``serving/scoring_input.py``); on a
server of several models, ``/invocations?model=NAME`` picks one (the first otherwise)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Optional

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ..errors import APIError
from ..flow import operation, run_json, run_stream
from ..framing import dumps
from ..http import check_api_key, parse_json, parsed, read_body
from ..logs import note_model
from ..scoring_input import parse_csv, parse_invocation
from ..services.base import INVOCATIONS
from ..state import ServerState

router = APIRouter()


@router.post("/invocations")
async def invocations(request: Request) -> Response:
    state: ServerState = request.app.state.servelm
    check_api_key(request, state.server.api_key)
    served = state.model(request.query_params.get("model"))  # several models: /invocations?model=NAME
    service = served.ready()
    service.require(INVOCATIONS)
    note_model(served.name, operation(service, INVOCATIONS))
    mime, *options = [part.strip() for part in request.headers.get("content-type", "application/json").split(";")]
    parameters = {k.strip().lower(): v.strip() for k, _, v in (o.partition("=") for o in options if o)}
    schema = _input_schema(service)
    model = getattr(service, "model", None)
    mlflow_input = bool(getattr(model, "mlflow_input", False))
    if mime == "text/csv":
        body = await read_body(request, state.server.max_body_bytes)
        invocation = await parsed(len(body), parse_csv, body, schema, mlflow_input)
    elif mime in ("application/json", ""):
        body = await read_body(request, state.server.max_body_bytes)
        metadata = getattr(model, "metadata", None)
        hinted = mlflow_input and bool(getattr(metadata, "is_signature_from_type_hint", False))
        invocation = await parsed(
            len(body), _parse_json_invocation, body, schema, parameters.get("format"), mlflow_input, hinted
        )
    else:
        raise APIError(
            415,
            f"content type {mime!r} is not supported; send application/json or text/csv",
            code="unsupported_media_type",
        )
    if invocation.stream:

        async def events() -> AsyncIterator[dict[str, Any]]:
            async for item in service.invoke_stream(invocation.data, invocation.params):
                yield {"data": json.dumps(item, default=json_default, separators=(",", ":"))}

        def error_events(exc: APIError) -> list[dict[str, Any]]:
            return [{"event": "error", "data": dumps(exc.body())}]

        return await run_stream(request, served, events(), error_events)

    async def answer() -> Any:
        result = await service.invoke(invocation.data, invocation.params)
        # numpy, pandas, datetimes and bytes anywhere in the output (MLflow's encoder); one encoding pass
        if not invocation.raw and type(result).__name__ == "Series":
            result = result.to_frame()  # MLflow writes a Series as the records of its one-column frame
        body = json.dumps(
            result if invocation.raw else {"predictions": result},
            default=json_default,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return Response(body, media_type="application/json")

    return await run_json(request, served, answer)


def _input_schema(service: Any) -> Any:
    """The served pyfunc model's input schema (for casting JSON to tensors, CSV columns...), or None."""
    model = getattr(service, "model", None)
    signature = getattr(getattr(model, "metadata", None), "signature", None)
    return signature.inputs if signature is not None else None


def json_default(obj: Any) -> Any:
    """JSON for what models return besides plain types: pydantic models, numpy, pandas, datetimes, bytes."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(exclude_none=True)
    if type(obj).__name__ == "datetime64":
        return str(obj)
    if hasattr(obj, "isoformat"):  # datetime, date, time, pandas Timestamp
        return obj.isoformat()
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, pandas Series
        return obj.tolist()
    if hasattr(obj, "to_dict") and hasattr(obj, "columns"):  # a DataFrame: its records
        return obj.to_dict(orient="records")
    if hasattr(obj, "to_dict"):  # MLflow's dataclass types
        return obj.to_dict()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if type(obj).__name__ == "Decimal":
        return float(obj)
    if isinstance(obj, (bytes, bytearray)):
        import base64

        return base64.b64encode(bytes(obj)).decode()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _parse_json_invocation(
    body: bytes, schema: Any, data_format: Optional[str], mlflow_input: bool, hinted: bool
) -> Any:
    """A JSON body as MLflow's scoring server reads it (on a worker thread for a large body)."""
    return parse_invocation(parse_json(body), schema, data_format, mlflow_input, hinted)
