"""servelm on Ray Serve: each replica of a deployment runs the app ``servelm serve`` runs (every route,
streaming, auth, errors, metrics) with its own model and engine.

    serve run servelm.serving.ray:app model=/models/tiny num_replicas=2 max_concurrency=32
    serve.run(build_app("/models/tiny", num_replicas="auto", max_concurrency=32))

How servelm's options become Ray's (``deployment_options``):

- ``max_ongoing_requests`` = ``max_concurrency``: Ray's router sends a replica no more requests than it runs
  at once; the others wait at Ray's proxy, where ``max_queued_requests`` = ``max_queue`` (past it, 503).
- autoscaling (``num_replicas="auto"`` or an ``autoscaling_config``) on ongoing requests, with the replica's
  concurrency as the target: ``max_concurrency``, capped at ``max_num_seqs`` (the batch) for LLM engines.
- ``graceful_shutdown_timeout_s`` = ``graceful_timeout``; servelm's own ``timeout`` (504) applies in the replica.
- A replica is ready once its model has loaded and its engine started (a model that fails to load fails the
  replica, with the reason); ``check_health`` is the model's readiness (``ServerState.status``), so Ray
  replaces a replica whose engine died.
- A client that disconnects: Ray's proxy cancels the replica's request, which closes the response stream;
  LLMService aborts the engine sequence in its ``finally`` (the batch row is freed at the next step).
- Every response names its replica in an ``x-servelm-replica`` header; ``/metrics`` counts the answering replica.
"""

# No ``from __future__ import annotations`` here: Ray reads the builder's annotation (ServelmAppArgs) as a class.

import json
import logging
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from .engines.registry import REGISTRY
from .options import EngineOptions, ModelSpec, ServerOptions, split_options

try:
    from ray import serve
    from ray.exceptions import TaskCancelledError
    from ray.serve import Application
except ImportError as _exc:  # pragma: no cover - exercised where ray is missing
    raise ImportError(f"servelm.serving.ray needs Ray Serve: pip install 'servelm[ray]' ({_exc})") from None

log = logging.getLogger("servelm.ray")

REPLICA_HEADER = "x-servelm-replica"
#: ServerOptions that Ray decides instead (its proxy listens; its replicas are the workers)
NOT_UNDER_RAY = ("host", "port", "workers")
#: engines whose concurrency is their batch (``max_num_seqs``)
LLM_ENGINES = tuple(entry.name for entry in REGISTRY if entry.generates)


# ---------------------------------------------------------------------------------- the deployment
@serve.deployment(name="servelm")
@serve.ingress()
class ServelmDeployment:
    """One replica: ``create_app`` over the model, loaded before the replica reports ready."""

    async def __init__(  # type: ignore[misc]  # Ray Serve awaits an async constructor
        self,
        model: Union[str, list[dict[str, Any]]],
        server_options: Optional[dict[str, Any]] = None,
        engine_options: Optional[dict[str, Any]] = None,
    ):
        self.model = model
        self.server = ServerOptions.model_validate(server_options or {})
        self.engine = EngineOptions.model_validate(engine_options or {})
        logging.getLogger("servelm").setLevel(self.server.log_level.upper())
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.state: Any = None

    async def __serve_build_asgi_app__(self) -> Any:
        """The replica's app, its model loaded and engine started (Ray runs the app's startup after this;
        ``create_app`` does not load a model twice)."""
        from .app import create_app

        app = create_app(self.model, self.server, self.engine)
        app.add_middleware(ReplicaAdapter, replica=self.replica)
        self.state = app.state.servelm
        for served, source in zip(self.state.models.values(), app.state.servelm_sources):
            await served.load(source)
            if served.load_error is not None:
                raise RuntimeError(f"servelm: model {served.name} ({source}) failed to load: {served.load_error}")
        log.info("replica %s serves %s", self.replica, ", ".join(self.state.models))
        return app

    def check_health(self) -> None:
        """Ray's health check: the model's readiness (an engine that died fails it; Ray replaces the replica)."""
        if self.state is None:
            raise RuntimeError("servelm: the model is not loaded yet")
        if self.state.status != "ok":
            detail = "; ".join(f"{m.name}: {m.detail()}" for m in self.state.models.values() if m.status != "ok")
            raise RuntimeError(f"servelm: {self.state.status}: {detail}")


class ReplicaAdapter:
    """ASGI middleware between Ray's replica and the app: every HTTP response names the replica that answered
    it, and a request whose client went away reads ``http.disconnect`` (as from any ASGI server) where Ray's
    ``receive`` raises TaskCancelledError; Ray also cancels the request itself."""

    def __init__(self, app: Any, replica: str):
        self.app = app
        self.value = replica.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (REPLICA_HEADER.encode(), self.value)]}
            await send(message)

        async def receive_or_disconnect() -> Any:
            try:
                return await receive()
            except TaskCancelledError:
                return {"type": "http.disconnect"}

        await self.app(scope, receive_or_disconnect, send_named)


# ---------------------------------------------------------------------------------- options -> Ray
def engine_kind(model: str, engine: EngineOptions) -> Optional[str]:
    """The engine that will serve ``model`` (None when it cannot be told here: a path only the cluster has)."""
    from .services.build import choose_engine

    try:
        return choose_engine(model, engine.engine, engine.device)
    except Exception:
        return engine.engine


def target_ongoing_requests(server: ServerOptions, engine: EngineOptions, kind: Optional[str]) -> int:
    """What a replica runs at once: ``max_concurrency``, capped at the batch (``max_num_seqs``) for LLM engines."""
    return min(server.max_concurrency, engine.max_num_seqs) if kind in LLM_ENGINES else server.max_concurrency


def deployment_options(
    server: ServerOptions,
    engine: EngineOptions,
    kind: Optional[str] = None,
    num_replicas: Union[int, str, None] = None,
    autoscaling_config: Optional[dict[str, Any]] = None,
    ray_actor_options: Optional[dict[str, Any]] = None,
    **extra: Any,
) -> dict[str, Any]:
    """``Deployment.options(...)`` for a model served with these options (``extra``: any other deployment
    option, which wins)."""
    options: dict[str, Any] = {
        "max_ongoing_requests": server.max_concurrency,
        "max_queued_requests": server.max_queue,
        "graceful_shutdown_timeout_s": server.graceful_timeout,
    }
    if num_replicas == "auto" or autoscaling_config is not None:
        if isinstance(num_replicas, int):
            raise ValueError("give num_replicas or autoscaling_config, not both")
        options["autoscaling_config"] = {
            "min_replicas": 1,
            "max_replicas": 100,
            "target_ongoing_requests": target_ongoing_requests(server, engine, kind),
            **(autoscaling_config or {}),
        }
    elif num_replicas is not None:
        options["num_replicas"] = int(num_replicas)
    actor = dict(ray_actor_options or {})
    if "num_gpus" not in actor and (engine.device or "").startswith("cuda"):
        actor["num_gpus"] = engine.tensor_parallel_size or 1  # Ray hides the GPUs from actors that ask for none
    if actor:
        options["ray_actor_options"] = actor
    options.update(extra)
    return options


def build_app(
    model: Union[str, list[Any]],
    server_options: Optional[ServerOptions] = None,
    engine_options: Optional[EngineOptions] = None,
    *,
    num_replicas: Union[int, str, None] = None,
    autoscaling_config: Optional[dict[str, Any]] = None,
    ray_actor_options: Optional[dict[str, Any]] = None,
    name: str = "servelm",
    deployment_options: Optional[dict[str, Any]] = None,
    **fields: Any,
) -> Application:
    """The Ray Serve application serving the model directory ``model`` (``serve.run(build_app(...))``), or several
    models in each replica: a list of ``ModelSpec`` (or dicts of its fields: ``{"model": DIR, "name": ...}``).

    Options as for ``create_app``: ``ServerOptions`` / ``EngineOptions`` and/or their field names
    (``max_concurrency=32``, ``api_key=...``; host, port and workers are Ray's). ``num_replicas`` is a
    number or ``"auto"`` (autoscaling); ``autoscaling_config`` and ``ray_actor_options`` are Ray's, on top of
    what servelm derives; ``deployment_options`` any other ``Deployment.options`` argument.
    """
    ignored = sorted(k for k in fields if k in NOT_UNDER_RAY)
    if ignored:
        raise TypeError(f"{ignored}: Ray Serve decides these (its proxy's http_options, and num_replicas)")
    server, engine = split_options(server_options, engine_options, **fields)
    if isinstance(model, (list, tuple)):
        specs = [spec if isinstance(spec, ModelSpec) else ModelSpec.model_validate(spec) for spec in model]
        kinds = [engine_kind(spec.model, spec.engine) for spec in specs]
        kind = next((k for k in kinds if k in LLM_ENGINES), kinds[0] if kinds else None)  # an LLM bounds the replica
        served: Union[str, list[dict[str, Any]]] = [spec.model_dump() for spec in specs]
    else:
        served = str(model)
        kind = engine_kind(served, engine)
    options = _deployment_options(
        server, engine, kind, num_replicas, autoscaling_config, ray_actor_options, **(deployment_options or {})
    )
    server_dump = server.model_dump(exclude=set(NOT_UNDER_RAY))
    if server_dump["api_key"] is None:
        del server_dump["api_key"]  # the replica's SERVELM_API_KEY (a runtime_env variable) then applies
    return ServelmDeployment.options(name=name, **options).bind(  # type: ignore[attr-defined]
        served, server_dump, engine.model_dump()
    )


_deployment_options = deployment_options  # build_app's parameter of the same name shadows it


# ---------------------------------------------------------------------------------- serve run / config files
class _RayArgs(BaseModel):
    """The application builder's own arguments (the rest are servelm's option fields)."""

    model_config = ConfigDict(extra="forbid")

    model: Union[str, list[dict[str, Any]]] = Field(
        ...,
        description="Model directory (a servelm/MLflow model, or a Hugging Face checkpoint), or a list of models "
        "({model: DIR, name: NAME, engine: {...}, max_concurrency: N}) served together in each replica.",
    )
    num_replicas: Optional[Union[int, Literal["auto"]]] = Field(None, description="Replicas, or 'auto' to autoscale.")
    autoscaling_config: Optional[dict[str, Any]] = Field(
        None, description="Ray's autoscaling config, on top of servelm's target."
    )
    ray_actor_options: Optional[dict[str, Any]] = Field(
        None, description="Ray's actor options (num_cpus, num_gpus, runtime_env...)."
    )
    name: str = Field("servelm", description="Deployment name.")

    @field_validator("autoscaling_config", "ray_actor_options", mode="before")
    @classmethod
    def _json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value  # `serve run ... key=value` passes strings


ServelmAppArgs = create_model(  # type: ignore[call-overload]
    "ServelmAppArgs",
    __base__=_RayArgs,
    **{
        name: (Optional[info.annotation], Field(None, description=info.description))
        for options in (ServerOptions, EngineOptions)
        for name, info in options.model_fields.items()
        if name not in NOT_UNDER_RAY
    },
)
ServelmAppArgs.__doc__ = (
    "Arguments of ``serve run servelm.serving.ray:app``: the model, Ray's replica settings, servelm's options "
    "(unset: their defaults)."
)


def app(args: ServelmAppArgs) -> Application:
    """The application builder: ``serve run servelm.serving.ray:app model=DIR [field=value ...]``, or
    ``import_path: servelm.serving.ray:app`` with ``args:`` in a Serve config file."""
    given = args.model_dump(exclude_none=True)
    return build_app(given.pop("model"), **given)


__all__ = ["ServelmAppArgs", "ServelmDeployment", "app", "build_app", "deployment_options"]
