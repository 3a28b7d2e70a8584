"""/v1/completions (OpenAI's legacy text completions) through the real openai client: an agent answers each
prompt through chat; what no model here supports (suffix, best_of != n, logprobs) is a 400 naming it."""

import json

import httpx
import pytest

from servelm.flavors.pyfunc import save_model


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory, serve, write_code, chat_agent_source):
    tmp = tmp_path_factory.mktemp("completions")
    save_model(str(tmp / "echo"), python_model=write_code(tmp, "agent.py", chat_agent_source))
    with serve(str(tmp / "echo")) as (base, _):
        yield base


def test_each_prompt_answered_through_chat(echo_server, openai_client):
    reply = openai_client(echo_server).completions.create(model="echo", prompt=["one two", "three"])
    assert reply.object == "text_completion" and reply.id.startswith("cmpl")
    assert [(c.index, c.text, c.finish_reason) for c in reply.choices] == [(0, "one two", "stop"), (1, "three", "stop")]
    echoed = openai_client(echo_server).completions.create(model="echo", prompt="hi", echo=True)
    assert echoed.choices[0].text == "hihi"


def test_streamed_with_usage(echo_server, openai_client, sse_lines):
    chunks = list(
        openai_client(echo_server).completions.create(
            model="echo", prompt="a b", stream=True, stream_options={"include_usage": True}
        )
    )
    assert len({c.id for c in chunks}) == 1
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "a b "
    assert chunks[-2].choices[0].finish_reason == "stop" and chunks[-1].choices == [] and chunks[-1].usage is not None
    lines = sse_lines(echo_server, "/v1/completions", {"prompt": "x", "stream": True})
    assert lines[-1] == "data: [DONE]" and json.loads(lines[0][len("data: ") :])["object"] == "text_completion"


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"suffix": "end"}, "suffix"),
        ({"best_of": 2}, "best_of"),
        ({"logprobs": 1}, "logprobs"),
        ({"n": 2}, "n"),
        ({"prompt": []}, "prompt"),
        ({"model": "gpt-9"}, "model"),
    ],
)
def test_what_is_not_supported_is_named(echo_server, extra, param):
    resp = httpx.post(f"{echo_server}/v1/completions", json={"prompt": "x", **extra}, timeout=120)
    assert resp.status_code in (400, 404), resp.text
    assert resp.json()["error"]["param"] == param
