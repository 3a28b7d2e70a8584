"""The request flow every model route shares: a model's exception as a 500 (the server keeps serving),
errors before a stream's first event as an HTTP status, errors after it as an event."""

import pytest


def test_agent_exception_is_500_and_server_keeps_serving(limited_server, post_chat, chat_body, assert_error):
    base, _, _ = limited_server
    auth = {"Authorization": "Bearer sekret", "x-request-id": "r-1"}
    crashed = post_chat(base, {"messages": [{"role": "user", "content": "boom"}]}, headers=auth)
    assert_error(crashed, 500, "RuntimeError (request r-1;")
    assert (
        "agent exploded" not in crashed.text and crashed.headers["x-request-id"] == "r-1"
    )  # the text stays in the log
    answered = post_chat(base, chat_body)
    assert answered.json()["choices"][0]["message"]["content"] == "hi" and len(answered.headers["x-request-id"]) == 32


def test_error_before_the_first_event_is_an_http_error(limited_server, post_chat, assert_error, wait_until):
    base, app, _ = limited_server
    assert_error(
        post_chat(base, {"messages": [{"role": "user", "content": "fail-first"}], "stream": True}),
        500,
        "ValueError",
    )
    assert wait_until(lambda: not app.state.servelm.admission.running)


def test_error_after_stream_start_is_an_event(limited_server, openai_client, wait_until):
    base, app, _ = limited_server
    client = openai_client(base, api_key="sekret")
    stream = client.chat.completions.create(
        model="Slow", messages=[{"role": "user", "content": "fail-mid"}], stream=True
    )
    seen = []
    with pytest.raises(Exception, match="ValueError"):
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content)
    assert seen[:2] == ["w0 ", "w1 "]
    assert wait_until(lambda: not app.state.servelm.admission.running)
