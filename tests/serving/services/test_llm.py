"""LLMService driving agent frameworks through a real server: openai-agents runs a function tool with
tool_choice="required" to completion (one call with valid arguments, then a text answer) over chat
completions and over the Responses API; pydantic-ai gets structured output through a tool and natively
(response_format). Random tiny weights where a grammar makes any answer valid; the real model where the
run needs it to stop by itself."""

import asyncio

import pytest

pytest.importorskip("torch")
agents = pytest.importorskip("agents")
pydantic_ai = pytest.importorskip("pydantic_ai")

from pydantic import BaseModel  # noqa: E402


class City(BaseModel):
    name: str
    population: int


def run_agent(base: str, kind: str, max_tokens: int) -> tuple[list[str], str]:
    """Run an openai-agents Agent with one function tool and tool_choice="required"; (tool calls made, final output)."""
    from openai import AsyncOpenAI

    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"Sunny in {city}"

    async def main() -> str:
        model_class = agents.OpenAIChatCompletionsModel if kind == "chat" else agents.OpenAIResponsesModel
        model = model_class("m", AsyncOpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0))
        agent = agents.Agent(
            name="weather",
            instructions="Answer briefly.",
            tools=[get_weather],
            model=model,
            model_settings=agents.ModelSettings(tool_choice="required", temperature=0, max_tokens=max_tokens),
        )
        result = await agents.Runner.run(agent, "What is the weather in Paris?", max_turns=4)
        return str(result.final_output)

    agents.set_tracing_disabled(True)
    return calls, asyncio.run(main())


@pytest.fixture(scope="module")
def tiny(serve, tiny_llama):
    with serve(tiny_llama, served_model_name="m") as (base, _):
        yield base


@pytest.fixture(scope="module")
def smol(serve, smollm2_checkpoint):
    with serve(smollm2_checkpoint, served_model_name="m", startup_timeout=600) as (base, _):
        yield base


def test_openai_agents_runs_a_required_tool_over_chat_completions(tiny):
    calls, final = run_agent(tiny, "chat", 200)
    assert len(calls) == 1 and isinstance(calls[0], str)  # one call with valid arguments
    assert final  # then a text answer (tool_choice resets to auto after the call)


def test_openai_agents_runs_a_required_tool_over_the_responses_api(smol):
    calls, final = run_agent(smol, "responses", 100)
    # the first call names the city; how many more parallel calls a 135M model adds under greedy decoding
    # turns on the last bits of its arithmetic (each is valid JSON for the tool: the grammar sees to that)
    assert calls and calls[0] == "Paris" and all(isinstance(city, str) for city in calls) and final


def test_pydantic_ai_structured_output_through_a_tool_and_natively(tiny):
    from pydantic_ai import NativeOutput
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel("m", provider=OpenAIProvider(base_url=f"{tiny}/v1", api_key="x"))
    for output_type in (City, NativeOutput(City)):
        agent = pydantic_ai.Agent(model, output_type=output_type, model_settings={"temperature": 0, "max_tokens": 200})
        city = agent.run_sync("Describe Paris.").output
        assert isinstance(city, City) and isinstance(city.population, int)
