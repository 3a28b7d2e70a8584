"""``ServerState``: loading / ok / error, a 503 saying why there is no model, a 404 for another model's name."""

import pytest

from servelm.serving.errors import APIError
from servelm.serving.options import EngineOptions, ServerOptions
from servelm.serving.state import ServerState


def test_unknown_model_is_404(limited_server, post_chat, chat_body, assert_error):
    base, _, _ = limited_server
    assert_error(post_chat(base, {**chat_body, "model": "gpt-9"}), 404, "gpt-9")


def test_status_and_ready_before_and_after_a_failed_load():
    state = ServerState(ServerOptions(), EngineOptions(), "m")
    assert state.status == "loading"
    with pytest.raises(APIError) as info:
        state.default.ready()
    assert (
        info.value.status == 503
        and info.value.message == "model is still loading"
        and info.value.headers == {"Retry-After": "1"}
    )
    state.default.load_error = "OSError: gone"
    assert state.status == "error"
    with pytest.raises(APIError, match="model failed to load: OSError: gone"):
        state.default.ready()


def test_a_request_naming_no_model_or_the_default_gets_it():
    state = ServerState(ServerOptions(), EngineOptions(), "m")
    assert state.model(None) is state.default and state.model("m") is state.default
    with pytest.raises(APIError) as info:
        state.model("other")
    assert (info.value.status, info.value.param, info.value.code) == (404, "model", "model_not_found")


async def test_load_failure_is_kept_and_reported(tmp_path):
    state = ServerState(ServerOptions(), EngineOptions(), "m")
    reasons = []
    await state.default.load(str(tmp_path / "does-not-exist"), reasons.append)
    assert state.service is None and state.status == "error"
    assert (
        reasons == [f"model failed to load: {state.default.load_error}"]
        and "not a directory" in state.default.load_error
        and "\n" not in state.default.load_error
    )


def test_a_state_loaded_before_startup_is_not_loaded_again(tmp_path):
    """The Ray replica loads its model before the app starts (servelm.serving.ray); startup then loads nothing."""
    import asyncio

    from fastapi.testclient import TestClient

    from servelm.serving import create_app

    reasons = []
    path = str(tmp_path / "does-not-exist")
    app = create_app(path, on_load_error=reasons.append)
    asyncio.run(app.state.servelm.default.load(path, reasons.append))
    with TestClient(app) as client:
        assert client.get("/health").json()["status"] == "error"
    assert len(reasons) == 1
