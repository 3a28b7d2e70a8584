"""/v1/models and /v1/models/{id}: the one model this server serves, behind the key when one is set."""

import httpx
import pytest


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory, serve, write_code, chat_agent_source):
    from servelm.flavors.pyfunc import save_model

    tmp = tmp_path_factory.mktemp("models")
    save_model(str(tmp / "echo"), python_model=write_code(tmp, "agent.py", chat_agent_source))
    with serve(str(tmp / "echo")) as (base, _):
        yield base


def test_models_endpoint(echo_server, openai_client):
    models = openai_client(echo_server).models.list()
    assert [m.id for m in models.data] == ["echo"]


def test_retrieve_one_model_or_404(echo_server, openai_client):
    card = openai_client(echo_server).models.retrieve("echo")
    assert card.id == "echo" and card.owned_by == "servelm" and card.task == "agent/v2/chat"
    missing = httpx.get(f"{echo_server}/v1/models/gpt-9")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_models_need_the_key(limited_server, auth):
    base, _, _ = limited_server
    assert httpx.get(f"{base}/v1/models").status_code == 401
    assert httpx.get(f"{base}/v1/models", headers=auth).json()["data"][0]["id"] == "Slow"
