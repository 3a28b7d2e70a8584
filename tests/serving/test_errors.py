"""OpenAI-shaped errors and the one mapping from whatever a route or a model raised to what the client is told."""

import logging

import pytest
from pydantic import BaseModel, ValidationError

from servelm.agents import ChatAgentRequest
from servelm.flavors import SchemaEnforcementError
from servelm.serving.errors import APIError, as_api_error, validation_error
from servelm.serving.request_context import end_request, start_request


def pydantic_error(body, model=ChatAgentRequest):
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    return info.value


@pytest.mark.parametrize(
    "status, kind",
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (404, "not_found_error"),
        (413, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "server_error"),
        (503, "service_unavailable"),
        (504, "timeout_error"),
        (418, "invalid_request_error"),
        (502, "server_error"),
    ],
)
def test_the_type_follows_the_status(status, kind):
    assert APIError(status, "x").type == kind


def test_body_has_the_four_openai_fields():
    error = APIError(400, "bad n", param="n", code="unsupported_value", headers={"X-A": "1"})
    assert error.body() == {
        "error": {"message": "bad n", "type": "invalid_request_error", "param": "n", "code": "unsupported_value"}
    }
    assert error.headers == {"X-A": "1"} and str(error) == "bad n"
    assert APIError(400, "x", type="custom").type == "custom" and APIError(400, "x").headers == {}


def test_validation_error_names_the_first_field():
    error = validation_error(pydantic_error({"messages": [{"role": "wizard", "content": "x"}]}))
    assert error.status == 400 and error.param == "messages.0.role" and error.code == "invalid_value"
    assert error.message.startswith("messages.0.role: ") and "wizard" in error.message


def test_a_missing_field_says_field_required():
    error = validation_error(pydantic_error({}))
    assert (error.message, error.param, error.code) == (
        "messages: Field required",
        "messages",
        "missing_required_parameter",
    )
    assert validation_error(pydantic_error({}), prefix="body").param == "body.messages"


def test_further_errors_are_counted():
    class Two(BaseModel):
        a: int
        b: int
        c: int

    assert validation_error(pydantic_error({}, Two)).message == "a: Field required (and 2 more errors)"
    assert validation_error(pydantic_error({"a": 1, "b": 1}, Two)).message == "c: Field required"
    assert validation_error(pydantic_error({"c": 1, "b": 1}, Two)).message == "a: Field required"
    assert validation_error(pydantic_error({"c": 1}, Two)).message == "a: Field required (and 1 more error)"


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_as_api_error_maps_each_kind():
    given = APIError(429, "busy")
    assert as_api_error(given) is given
    schema = as_api_error(SchemaEnforcementError("'q' is required"))
    assert (schema.status, schema.code) == (
        400,
        "invalid_input",
    ) and schema.message == "input does not match the model signature: 'q' is required"
    invalid = as_api_error(pydantic_error({"messages": []}))
    assert invalid.status == 400 and invalid.param == "messages"
    timeout = as_api_error(TimeoutError())
    assert (timeout.status, timeout.code, timeout.type) == (504, "timeout", "timeout_error")
    log, seen = logging.getLogger("servelm.serving"), Records()
    log.addHandler(seen)
    try:
        crash = as_api_error(RuntimeError("agent exploded"))
    finally:
        log.removeHandler(seen)
    assert (crash.status, crash.code) == (500, "model_error")
    assert crash.message == "model error: RuntimeError (the server's log has the details)"  # not its text
    assert any(
        r.exc_info and "agent exploded" in r.getMessage() for r in seen.records
    )  # the text and traceback go to the log only
    internal = as_api_error(KeyError("k"), during="internal")
    assert (internal.status, internal.code) == (500, "internal_error")
    rid, token = start_request("req-7", expose_errors=False)  # inside a request: its id, for the log
    try:
        assert (
            as_api_error(KeyError("k")).message
            == "model error: KeyError (request req-7; the server's log has the details)"
        )
    finally:
        end_request(token)
    _, token = start_request(None, expose_errors=True)  # --expose-errors: the text too
    try:
        assert as_api_error(KeyError("k"), during="internal").message == "internal error: KeyError: 'k'"
    finally:
        end_request(token)


def test_unknown_routes_and_methods_are_openai_shaped(limited_server):
    import httpx

    base, _, _ = limited_server
    missing = httpx.get(f"{base}/v1/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_route"
    wrong = httpx.get(f"{base}/v1/chat/completions")
    assert wrong.status_code == 405 and set(wrong.json()["error"]) == {"message", "type", "param", "code"}
