"""``llm_client(model)``: the OpenAI client an agent uses to call its LLM, the same code inside and outside servelm.

Where servelm serves ``model`` in this process beside the agent (``servelm serve -m agent -m smollm2=...``), the
client is in process: ``chat.completions.create`` and ``responses.create`` (streamed or not) go straight to that
model's engine, with no HTTP hop, its spans in the agent's trace, and its requests cancelled when the agent's
request ends early. Anywhere else it is ``openai.OpenAI`` at ``base_url`` (default: ``OPENAI_BASE_URL``), so an
agent run on its own can point the same code at any OpenAI-compatible server (its calls carry the current trace's
``traceparent``).

The agent declares the model it calls in its model_config (``model_config={"llm": "smollm2"}``): servelm then
refuses to start when that model is not served beside it, instead of failing on the first request.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Optional

#: set by servelm's server while it serves models in this process: (model name, async?) -> in-process client,
#: or None when this process serves no model of that name
_local_clients: Optional[Callable[[str, bool], Any]] = None


def install_local_clients(factory: Optional[Callable[[str, bool], Any]]) -> None:
    """Called by servelm's server: where ``llm_client`` finds the models it serves (None: none any more)."""
    global _local_clients
    _local_clients = factory


def llm_client(model: str, *, base_url: Optional[str] = None, api_key: Optional[str] = None) -> Any:
    """An OpenAI client for the LLM named ``model`` (calls default to that model when they name none).

    In process where servelm serves ``model`` here and no ``base_url`` is given; else ``openai.OpenAI`` at
    ``base_url`` or ``OPENAI_BASE_URL`` (``api_key`` or ``OPENAI_API_KEY``, else a placeholder: local servers
    without auth take any).
    """
    return _client(model, base_url, api_key, False)


def async_llm_client(model: str, *, base_url: Optional[str] = None, api_key: Optional[str] = None) -> Any:
    """``llm_client`` for async code (``apredict``, ``apredict_stream``): ``openai.AsyncOpenAI``'s interface."""
    return _client(model, base_url, api_key, True)


def _client(model: str, base_url: Optional[str], api_key: Optional[str], asynchronous: bool) -> Any:
    if base_url is None and _local_clients is not None:
        local = _local_clients(model, asynchronous)
        if local is not None:
            return local
    try:
        import openai
    except ImportError:
        raise ImportError(
            f"llm_client({model!r}): servelm serves no model of that name in this process, and the openai package "
            "(for a server elsewhere) is not installed: pip install openai"
        ) from None
    url = base_url or os.environ.get("OPENAI_BASE_URL")
    if url is None:
        raise ValueError(
            f"llm_client({model!r}): servelm serves no model of that name in this process; give base_url "
            "(or set OPENAI_BASE_URL) to reach it over HTTP"
        )
    key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
    if asynchronous:
        return openai.AsyncOpenAI(
            base_url=url,
            api_key=key,
            http_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [_traced_async]}),
        )
    return openai.OpenAI(
        base_url=url, api_key=key, http_client=openai.DefaultHttpxClient(event_hooks={"request": [_traced]})
    )


def _traced(request: Any) -> None:
    """Pass the current trace on (``traceparent``), where OpenTelemetry is installed: the server the agent calls
    (servelm elsewhere, vLLM...) puts its spans in the agent's trace."""
    try:
        from opentelemetry import propagate
    except ImportError:
        return
    propagate.inject(request.headers)


async def _traced_async(request: Any) -> None:
    _traced(request)


def declared_llm(model_config: Any) -> Optional[str]:
    """The LLM an agent's model_config declares (``llm: NAME``), if any."""
    if isinstance(model_config, dict):
        value = model_config.get("llm")
        return value if isinstance(value, str) and value else None
    return None
