"""Per-call cost of a loaded model's predict path, servelm vs MLflow (when mlflow is installed).

    python benchmarks/hot_path.py [--quick] [--out FILE.json]

Rows: {"name", "system", "median_us", "p99_us", "n"}. Each call is timed on its own (perf_counter_ns)
after a warm-up; medians are what to compare. ``system`` is ``raw`` for the bare typed method call,
``servelm`` for servelm's loaded model, ``mlflow`` for MLflow's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

AGENTS_SOURCE = """
from servelm.agents import (ChatAgent, ChatAgentChunk, ChatAgentMessage, ChatAgentResponse, ChatModel,
                            ChatCompletionResponse, ChatChoice, ChatMessage, ResponsesAgent, ResponsesAgentResponse,
                            PythonModel)

class EchoChatAgent(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        return ChatAgentResponse(
            messages=[ChatAgentMessage(role="assistant", content=messages[-1].content, id="msg-1")]
        )
    def predict_stream(self, messages, context=None, custom_inputs=None):
        yield ChatAgentChunk(delta=ChatAgentMessage(role="assistant", content=messages[-1].content, id="msg-1"))

class EchoChatModel(ChatModel):
    def predict(self, context, messages, params):
        return ChatCompletionResponse(
            choices=[ChatChoice(message=ChatMessage(role="assistant", content=messages[-1].content))]
        )

class EchoResponsesAgent(ResponsesAgent):
    def predict(self, request):
        return ResponsesAgentResponse(output=[self.create_text_output_item(text=request.input[-1].text(), id="msg-1")])

class Upper(PythonModel):
    def predict(self, model_input: list[str], params=None) -> list[str]:
        return [s.upper() for s in model_input]
"""

MLFLOW_SOURCE = """
import mlflow
from mlflow.pyfunc import ChatAgent, ChatModel, ResponsesAgent, PythonModel
from mlflow.types.agent import ChatAgentChunk, ChatAgentMessage, ChatAgentResponse
from mlflow.types.llm import ChatCompletionResponse, ChatChoice, ChatMessage
from mlflow.types.responses import ResponsesAgentResponse

class EchoChatAgent(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        return ChatAgentResponse(
            messages=[ChatAgentMessage(role="assistant", content=messages[-1].content, id="msg-1")]
        )
    def predict_stream(self, messages, context=None, custom_inputs=None):
        yield ChatAgentChunk(delta=ChatAgentMessage(role="assistant", content=messages[-1].content, id="msg-1"))

class EchoChatModel(ChatModel):
    def predict(self, context, messages, params):
        return ChatCompletionResponse(
            choices=[ChatChoice(message=ChatMessage(role="assistant", content=messages[-1].content))]
        )

class EchoResponsesAgent(ResponsesAgent):
    def predict(self, request):
        c = request.input[-1].content
        return ResponsesAgentResponse(
            output=[self.create_text_output_item(text=c if isinstance(c, str) else "", id="msg-1")]
        )

class Upper(PythonModel):
    def predict(self, model_input: list[str], params=None) -> list[str]:
        return [s.upper() for s in model_input]
"""

CHAT = {"messages": [{"role": "user", "content": "Hello!"}]}
CHAT_MODEL = {"messages": [{"role": "user", "content": "Hello!"}], "temperature": 0.5}
RESPONSES = {"input": [{"role": "user", "content": "Hello!"}]}


def time_calls(fn: Callable[[], Any], n: int) -> dict[str, float]:
    """Median and p99 of ``n`` individually timed calls, in microseconds."""
    for _ in range(min(200, n)):
        fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return summary(samples)


def summary(samples: list[int]) -> dict[str, float]:
    """Median and p99 of call times in nanoseconds, in microseconds, and their count."""
    samples = sorted(samples)
    return {
        "median_us": round(statistics.median(samples) / 1000, 2),
        "p99_us": round(samples[int(0.99 * (len(samples) - 1))] / 1000, 2),
        "n": len(samples),
    }


def import_time(module: str) -> dict[str, float]:
    """Median wall time of ``import module`` in fresh interpreters (5 runs), in microseconds."""
    runs = []
    for _ in range(5):
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import time; t=time.perf_counter(); import {module}; print(time.perf_counter()-t)",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(float(out.stdout) * 1e6)
    return {"median_us": round(statistics.median(runs), 1), "p99_us": round(max(runs), 1), "n": len(runs)}


def load_module(source: str, name: str) -> Any:
    import importlib.util

    path = os.path.join(tempfile.mkdtemp(prefix="servelm-bench-"), f"{name}.py")
    with open(path, "w") as f:
        f.write(source)
    sys.path.insert(0, os.path.dirname(path))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def bench_servelm(n: int) -> list[dict[str, Any]]:
    from servelm.agents import ChatAgentMessage
    from servelm.flavors.pyfunc import load_model, save_model

    mod = load_module(AGENTS_SOURCE, "servelm_bench_agents")
    rows = []
    typed = [ChatAgentMessage(role="user", content="Hello!")]
    raw_agent = mod.EchoChatAgent()
    rows.append({"name": "chat_agent.predict", "system": "raw", **time_calls(lambda: raw_agent.predict(typed), n)})
    root = tempfile.mkdtemp(prefix="servelm-bench-models-")
    models = {}
    for key, obj in (
        ("chat_agent", mod.EchoChatAgent()),
        ("chat_model", mod.EchoChatModel()),
        ("responses_agent", mod.EchoResponsesAgent()),
        ("typed_function", mod.Upper()),
    ):
        path = os.path.join(root, key)
        save_model(path, python_model=obj, input_example=["a"] if key == "typed_function" else None)
        start = time.perf_counter()
        models[key] = load_model(path)
        rows.append(
            {
                "name": f"{key}.load_model",
                "system": "servelm",
                "median_us": round((time.perf_counter() - start) * 1e6, 1),
                "p99_us": None,
                "n": 1,
            }
        )
    rows.append(
        {"name": "chat_agent.predict", "system": "servelm", **time_calls(lambda: models["chat_agent"].predict(CHAT), n)}
    )
    rows.append(
        {
            "name": "chat_agent.predict_stream_chunk",
            "system": "servelm",
            **time_calls(lambda: list(models["chat_agent"].predict_stream(CHAT)), n),
        }
    )
    rows.append(
        {
            "name": "chat_model.predict",
            "system": "servelm",
            **time_calls(lambda: models["chat_model"].predict(CHAT_MODEL), n),
        }
    )
    rows.append(
        {
            "name": "responses_agent.predict",
            "system": "servelm",
            **time_calls(lambda: models["responses_agent"].predict(RESPONSES), n),
        }
    )
    rows.append(
        {
            "name": "typed_function.predict",
            "system": "servelm",
            **time_calls(lambda: models["typed_function"].predict(["a", "b"]), n),
        }
    )
    rows += served_rows(models["chat_agent"], n)
    rows.append({"name": "import servelm.agents", "system": "servelm", **import_time("servelm.agents")})
    return rows


def served_rows(model: Any, n: int) -> list[dict[str, Any]]:
    """The agent as the server calls it (``AgentService``, no HTTP): a chat request answered, and streamed, each
    call timed on one event loop. The sync agent runs on the service's thread pool, as it does when served."""
    import asyncio

    from servelm.agents import ChatCompletionRequest
    from servelm.serving.services.agent import AgentService

    service = AgentService(model, 4)
    request = ChatCompletionRequest.model_validate(CHAT)

    async def stream() -> None:
        async for _ in service.chat_stream(request, "m"):
            pass

    async def timed(make: Callable[[], Any]) -> dict[str, float]:
        for _ in range(min(200, n)):
            await make()
        samples = []
        for _ in range(n):
            start = time.perf_counter_ns()
            await make()
            samples.append(time.perf_counter_ns() - start)
        return summary(samples)

    async def both() -> list[dict[str, Any]]:
        chat = await timed(lambda: service.chat(request, "m"))
        streamed = await timed(stream)
        await service.stop()
        return [
            {"name": "chat_agent.served_chat", "system": "servelm", **chat},
            {"name": "chat_agent.served_chat_stream", "system": "servelm", **streamed},
        ]

    return asyncio.run(both())


def bench_mlflow(n: int) -> list[dict[str, Any]]:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return []
    import mlflow.pyfunc

    os.environ.setdefault("MLFLOW_TRACKING_URI", "file://" + tempfile.mkdtemp(prefix="servelm-bench-mlruns-"))
    mod = load_module(MLFLOW_SOURCE, "mlflow_bench_agents")
    root = tempfile.mkdtemp(prefix="servelm-bench-mlflow-")
    models = {}
    for key, obj in (
        ("chat_agent", mod.EchoChatAgent()),
        ("chat_model", mod.EchoChatModel()),
        ("responses_agent", mod.EchoResponsesAgent()),
        ("typed_function", mod.Upper()),
    ):
        path = os.path.join(root, key)
        kwargs = {"input_example": ["a"]} if key == "typed_function" else {}
        mlflow.pyfunc.save_model(path, python_model=obj, **kwargs)
        start = time.perf_counter()
        models[key] = mlflow.pyfunc.load_model(path)
        rows_load = {
            "name": f"{key}.load_model",
            "system": "mlflow",
            "median_us": round((time.perf_counter() - start) * 1e6, 1),
            "p99_us": None,
            "n": 1,
        }
        models[key + "_load"] = rows_load
    rows = [models[k + "_load"] for k in ("chat_agent", "chat_model", "responses_agent", "typed_function")]
    quick = max(200, n // 10)  # MLflow calls are ~100x slower: fewer of them keep the run short
    rows.append(
        {
            "name": "chat_agent.predict",
            "system": "mlflow",
            **time_calls(lambda: models["chat_agent"].predict(CHAT), quick),
        }
    )
    rows.append(
        {
            "name": "chat_agent.predict_stream_chunk",
            "system": "mlflow",
            **time_calls(lambda: list(models["chat_agent"].predict_stream(CHAT)), quick),
        }
    )
    rows.append(
        {
            "name": "chat_model.predict",
            "system": "mlflow",
            **time_calls(lambda: models["chat_model"].predict(CHAT_MODEL), quick),
        }
    )
    rows.append(
        {
            "name": "responses_agent.predict",
            "system": "mlflow",
            **time_calls(lambda: models["responses_agent"].predict(RESPONSES), quick),
        }
    )
    rows.append(
        {
            "name": "typed_function.predict",
            "system": "mlflow",
            **time_calls(lambda: models["typed_function"].predict(["a", "b"]), quick),
        }
    )
    rows.append({"name": "import mlflow.pyfunc", "system": "mlflow", **import_time("mlflow.pyfunc")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calls (finishes in well under 30 s)")
    parser.add_argument("--out", help="write the rows and the machine description as JSON here")
    args = parser.parse_args()
    n = 2000 if args.quick else 20000
    rows = bench_servelm(n) + bench_mlflow(n)
    by = {(r["name"], r["system"]): r for r in rows}
    ratios = {}
    for name in (
        "chat_agent.predict",
        "chat_agent.predict_stream_chunk",
        "chat_model.predict",
        "responses_agent.predict",
        "typed_function.predict",
    ):
        if (name, "mlflow") in by:
            ratios[name] = round(by[(name, "mlflow")]["median_us"] / by[(name, "servelm")]["median_us"], 1)
    print(f"{'name':36} {'system':8} {'median_us':>10} {'p99_us':>10} {'n':>6}")
    for r in rows:
        print(f"{r['name']:36} {r['system']:8} {r['median_us']:>10} {str(r['p99_us']):>10} {r['n']:>6}")
    for name, ratio in ratios.items():
        print(f"mlflow/servelm median ratio {name}: {ratio}x")
    if args.out:
        meta = {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"),
        }
        try:
            import mlflow

            meta["mlflow"] = mlflow.__version__
        except ImportError:
            pass
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows, "mlflow_over_servelm": ratios}, f, indent=2)


if __name__ == "__main__":
    main()
