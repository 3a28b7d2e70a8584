"""``ChatAgent``: typed or dict calls, sync and async, streaming."""

import asyncio

import pytest

from servelm.agents import ChatAgent, ChatAgentChunk, ChatAgentMessage, ChatAgentResponse


class Echo(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        assert isinstance(messages[0], ChatAgentMessage)
        return ChatAgentResponse(
            messages=[ChatAgentMessage(role="assistant", content=messages[-1].content)],
            custom_outputs={"ctx": context and context.user_id},
        )

    def predict_stream(self, messages, context=None, custom_inputs=None):
        for w in messages[-1].content.split():
            yield ChatAgentChunk(delta=ChatAgentMessage(role="assistant", content=w, id="m"))


def test_chat_agent_accepts_typed_and_dict_calls():
    agent = Echo()
    typed = agent.predict([ChatAgentMessage(role="user", content="a")])
    as_dicts = agent.predict([{"role": "user", "content": "a"}], {"user_id": "u"})
    one_dict = agent.predict({"messages": [{"role": "user", "content": "a"}], "context": {"user_id": "v"}})
    assert typed.messages[0].content == as_dicts.messages[0].content == one_dict.messages[0].content == "a"
    assert as_dicts.custom_outputs == {"ctx": "u"} and one_dict.custom_outputs == {"ctx": "v"}


async def test_sync_agent_works_through_async_api():
    agent = Echo()
    resp = await agent.apredict({"messages": [{"role": "user", "content": "x y"}]})
    assert resp.messages[0].content == "x y"
    chunks = [c.delta.content async for c in agent.apredict_stream([{"role": "user", "content": "x y"}])]
    assert chunks == ["x", "y"]


class AsyncOnly(ChatAgent):
    async def apredict(self, messages, context=None, custom_inputs=None):
        await asyncio.sleep(0)
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content="async")])

    async def apredict_stream(self, messages, context=None, custom_inputs=None):
        for w in ("a", "b"):
            yield ChatAgentChunk(delta=ChatAgentMessage(role="assistant", content=w, id="m"))


def test_async_only_agent_still_answers_sync_calls():
    agent = AsyncOnly()
    assert agent.predict({"messages": [{"role": "user", "content": "x"}]}).messages[0].content == "async"
    assert [c.delta.content for c in agent.predict_stream([{"role": "user", "content": "x"}])] == ["a", "b"]


def test_missing_predict_is_a_clear_error():
    class Nothing(ChatAgent):
        pass

    with pytest.raises(NotImplementedError, match="Nothing must implement predict"):
        Nothing().predict([{"role": "user", "content": "x"}])


def test_convert_messages_to_dict_as_mlflow():
    from servelm.agents import ChatAgent, ChatAgentMessage

    class Agent(ChatAgent):
        def predict(self, messages, context=None, custom_inputs=None):
            raise NotImplementedError

    messages = [ChatAgentMessage(role="user", content="hi", id="1")]
    assert Agent()._convert_messages_to_dict(messages) == [{"role": "user", "content": "hi", "id": "1"}]
