"""/v1/responses through the real openai client: native ResponsesAgents and converted chat agents."""

import json

import pytest

from servelm.flavors.pyfunc import save_model


@pytest.fixture(scope="module", params=["responses_agent", "chat_agent"])
def server(request, tmp_path_factory, serve, write_code, chat_agent_source, responses_agent_source):
    tmp = tmp_path_factory.mktemp(request.param)
    source = responses_agent_source if request.param == "responses_agent" else chat_agent_source
    save_model(str(tmp / "m"), python_model=write_code(tmp, "agent.py", source))
    with serve(str(tmp / "m")) as (base, _):
        yield base


def test_non_streamed(server, openai_client):
    c = openai_client(server)
    response = c.responses.create(model="m", input="hello there")
    assert response.output_text == "hello there" and response.status == "completed"


def test_streamed_events_are_complete(server, openai_client):
    c = openai_client(server)
    events = list(c.responses.create(model="m", input=[{"role": "user", "content": "a b"}], stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert (
        kinds.index("response.output_item.added")
        < kinds.index("response.output_text.delta")
        < kinds.index("response.output_item.done")
    )
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "a b "
    assert events[-1].response.output_text.strip() == "a b"


def test_stream_helper_accumulates(server, openai_client):
    c = openai_client(server)
    with c.responses.stream(model="m", input="x y z") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text.strip() == "x y z"


def test_raw_sse_has_event_lines_and_no_done(server, sse_lines):
    lines = sse_lines(server, "/v1/responses", {"input": "q", "stream": True})
    assert lines[0] == "event: response.created" and "[DONE]" not in "".join(lines)
    assert json.loads(lines[-1][len("data: ") :])["type"] == "response.completed"


@pytest.mark.parametrize(
    "extra, param",
    [({"background": True}, "background"), ({"truncation": "auto"}, "truncation")],
)
def test_options_that_cannot_be_honoured_are_refused(server, openai_client, extra, param):
    import openai

    c = openai_client(server)
    with pytest.raises(openai.BadRequestError) as caught:
        c.responses.create(model="m", input="hi", **extra)
    assert caught.value.body["param"] == param
    assert c.responses.create(model="m", input="hi", background=False, truncation="disabled").status == "completed"
