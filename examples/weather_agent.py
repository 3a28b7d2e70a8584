"""A ResponsesAgent that calls the LLM served beside it: it asks the LLM which city to look up (a forced tool call),
runs the tool, and streams the LLM's answer. Served with its LLM from one command (see the README):

    servelm serve -m weather-agent -m smollm2=smollm2

``llm_client`` is the openai client: in process inside that server, and ``openai.OpenAI`` at ``OPENAI_BASE_URL`` when
this agent runs anywhere else. With tracing on (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), the tool's span joins the
request's trace, between the two LLM calls.
"""

import json

from servelm.agents import ResponsesAgent, ResponsesAgentResponse, ResponsesAgentStreamEvent, llm_client
from servelm.flavors import set_model

WEATHER = {"paris": "sunny, 21 C", "oslo": "snow, -3 C", "lima": "cloudy, 18 C"}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather now in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "enum": sorted(WEATHER)}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
]


def get_weather(city: str) -> str:
    try:
        from opentelemetry import trace  # a span of its own where tracing is installed
    except ImportError:
        return WEATHER.get(city.lower(), "unknown")
    with trace.get_tracer("weather-agent").start_as_current_span("execute_tool get_weather") as span:
        span.set_attribute("gen_ai.tool.name", "get_weather")
        return WEATHER.get(city.lower(), "unknown")


class WeatherAgent(ResponsesAgent):
    def load_context(self, context):
        self.llm = context.model_config["llm"]  # the LLM served beside it, by name

    def predict(self, request):
        events = list(self.predict_stream(request))
        items = [e.item for e in events if e.type == "response.output_item.done"]
        return ResponsesAgentResponse(output=items)

    def predict_stream(self, request):
        client = llm_client(self.llm)
        messages = self.prep_msgs_for_cc_llm(request.input)
        choice = client.chat.completions.create(
            model=self.llm,
            messages=messages,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=200,  # a cap: the call is grammar-constrained and ends when complete
            temperature=0,
        ).choices[0]
        call = choice.message.tool_calls[0]
        yield ResponsesAgentStreamEvent(
            type="response.output_item.done",
            item=self.create_function_call_item("fc-1", call.id, "get_weather", call.function.arguments),
        )
        result = get_weather(json.loads(call.function.arguments)["city"])
        yield ResponsesAgentStreamEvent(
            type="response.output_item.done", item=self.create_function_call_output_item(call.id, result)
        )
        messages += [
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": result},
            {"role": "system", "content": "Answer the user in one sentence, with the weather the tool gave."},
        ]
        text = ""
        for chunk in client.chat.completions.create(
            model=self.llm, messages=messages, max_tokens=60, temperature=0, stream=True
        ):
            delta = chunk.choices[0].delta.content if chunk.choices else None
            if delta:
                text += delta
                yield ResponsesAgentStreamEvent(**self.create_text_delta(delta=delta, item_id="msg-1"))
        yield ResponsesAgentStreamEvent(
            type="response.output_item.done", item=self.create_text_output_item(text=text, id="msg-1")
        )


set_model(WeatherAgent())
