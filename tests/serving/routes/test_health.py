"""/health, /ping and /version: no key needed; 503 with the reason until a model serves."""

import httpx


def test_health_ping_version(limited_server):
    base, _, _ = limited_server
    assert httpx.get(f"{base}/health").json() == {"status": "ok"}
    assert httpx.get(f"{base}/ping").text == "\n"
    assert httpx.get(f"{base}/version").status_code == 200


def test_health_is_503_until_loaded(tmp_path, chat_body, wait_until):
    from starlette.testclient import TestClient

    from servelm.serving import create_app

    app = create_app(str(tmp_path / "does-not-exist"))
    with TestClient(app) as client:
        wait_until(lambda: app.state.servelm.default.load_error is not None)
        resp = client.get("/health")
        assert resp.status_code == 503 and "not a directory" in resp.json()["detail"]
        assert client.post("/v1/chat/completions", json=chat_body).status_code == 503
        assert client.get("/ping").status_code == 503
