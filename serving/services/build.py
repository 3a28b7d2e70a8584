"""Pick and build the ModelService for whatever ``servelm serve -m`` was pointed at: the engine (from the model's
flavors, or as forced; ``engines/registry.py`` lists them) and each engine's service builder."""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any, Optional

from servelm.agents import PythonModel, PythonModelContext
from servelm.flavors import Model, ModelFormatError
from servelm.flavors.pyfunc import PyFuncModel, load_model
from servelm.flavors.pyfunc.wrappers import task_of, wrap_python_model

from ..engines.llamacpp import llamacpp_available
from ..engines.registry import ENGINES, engine_entry, engine_only_options
from ..metrics import ServerMetrics
from ..options import EngineOptions, ServerOptions
from .base import ModelService


def default_model_name(model_or_path: Any) -> str:
    """The name /v1/models shows when none is given: the directory's name, or the class name."""
    if isinstance(model_or_path, (str, os.PathLike)):
        name = os.path.basename(os.path.normpath(os.fspath(model_or_path))) or "model"
        return name[: -len(".gguf")] if name.endswith(".gguf") else name
    if isinstance(model_or_path, PyFuncModel):
        return os.path.basename(model_or_path.path) or "model"
    return type(model_or_path).__name__


def choose_engine(path: str, forced: Optional[str], device: Optional[str] = None) -> str:
    """The engine for a directory: ``forced`` if given (and not "auto"), else by its flavors (a bare HF checkpoint:
    transformers). A transformers model on a CUDA machine goes to vLLM where vLLM is installed (and ``device`` does
    not name the CPU)."""
    if forced and forced != "auto":
        if forced not in ENGINES:
            raise ModelFormatError(f"unknown engine {forced!r}; choose one of auto, {', '.join(ENGINES)}")
        return forced
    chosen = _engine_by_format(path)
    if chosen == "transformers" and device != "cpu" and _vllm_on_cuda():
        return "vllm"
    return chosen


def _vllm_on_cuda() -> bool:
    """Whether vLLM is installed and a CUDA device is there (the GPU engine to prefer on such a machine)."""
    return importlib.util.find_spec("vllm") is not None and _cuda_present()


def _engine_by_format(path: str) -> str:
    """The engine a model's format asks for."""
    if path.endswith(".gguf") and os.path.isfile(path):
        # llama.cpp runs it as it is; without llama.cpp it is converted to a checkpoint (flavors/transformers/gguf.py)
        return "llamacpp" if llamacpp_available() else "transformers"
    if not os.path.isdir(path):
        raise ModelFormatError(f"{path} is not a directory (or a .gguf file)")
    if os.path.isfile(os.path.join(path, "MLmodel")):
        flavors = Model.load(path).flavors
        if "transformers" in flavors:
            if flavors["transformers"].get("gguf_file") and llamacpp_available():
                return "llamacpp"  # a GGUF kept as it is: llama.cpp runs it quantized
            return "transformers"
        if "onnx" in flavors:
            return "onnx"
        if "python_function" in flavors:
            return "pyfunc"
        raise ModelFormatError(
            f"{os.path.join(path, 'MLmodel')}: no servable flavor (found {', '.join(flavors) or 'none'})"
        )
    if os.path.isfile(os.path.join(path, "genai_config.json")):
        return "onnx"
    if not os.path.isfile(os.path.join(path, "config.json")) and _is_gguf(path) and llamacpp_available():
        return "llamacpp"
    if os.path.isfile(os.path.join(path, "config.json")) or any(f.endswith(".gguf") for f in os.listdir(path)):
        return "transformers"
    raise ModelFormatError(
        f"{path} has no MLmodel file and is not a Hugging Face checkpoint (no config.json) or a GGUF file"
    )


def _is_gguf(path: str) -> bool:
    if not (path.endswith(".gguf") or os.path.isdir(path)):
        return False
    from servelm.flavors.transformers.gguf import is_gguf

    return is_gguf(path)


def in_memory_pyfunc(python_model: PythonModel) -> PyFuncModel:
    """A PyFuncModel around an agent object that was never saved (for embedding and tests)."""
    context = PythonModelContext()
    python_model.load_context(context)
    task = task_of(python_model)
    metadata = Model(flavors={"python_function": {"streamable": True}}, metadata={"task": task} if task else None)
    return PyFuncModel(metadata, wrap_python_model(python_model, context), {}, "", python_model)


#: engine options that only some engines read, and those engines (for vLLM, ``device`` may only name the device it
#: runs on: ``vllm_device_refusal``)
ENGINE_ONLY_OPTIONS: dict[str, tuple[str, ...]] = engine_only_options()


def refuse_unread_options(engine: EngineOptions, chosen: str) -> None:
    """An error naming the first option set away from its default that the ``chosen`` engine would not read."""
    for name, engines in ENGINE_ONLY_OPTIONS.items():
        if chosen not in engines and getattr(engine, name) != EngineOptions.model_fields[name].default:
            hint = ""
            if chosen == "onnx" and name in ("quantization", "dtype"):
                hint = " (an onnx model's precision is chosen when it is exported)"
            elif chosen == "pyfunc":
                hint = " (a pyfunc model runs its own code; LLM engine options do not reach it)"
            raise ModelFormatError(f"option {name} applies to {_engines_named(engines)}, not {chosen}{hint}")


def _engines_named(engines: tuple[str, ...]) -> str:
    """("transformers", "onnx", "vllm") as "the transformers, onnx and vllm engines"."""
    if len(engines) == 1:
        return f"the {engines[0]} engine"
    return f"the {', '.join(engines[:-1])} and {engines[-1]} engines"


#: engine options a model directory may carry in its ``model_config`` (read when the option is not given)
SAVED_ENGINE_OPTIONS = ("dtype", "quantization", "kv_cache_dtype")


def saved_engine_options(defaults: dict[str, Any], chosen: str) -> dict[str, Any]:
    """The engine options saved in a model's ``model_config``, taken out of its request ``defaults``; one
    the ``chosen`` engine would not read is an error naming it (the directory asks for what would not run)."""
    saved = {name: defaults.pop(name) for name in SAVED_ENGINE_OPTIONS if name in defaults}
    for name in saved:
        engines = ENGINE_ONLY_OPTIONS[name]
        if chosen not in engines:
            raise ModelFormatError(
                f"this model's model_config sets {name}={saved[name]!r}, which applies to {_engines_named(engines)}, "
                f"not {chosen}; "
                "serve it with one of those engines, or save it without that key"
            )
    return saved


def vllm_device_refusal(device: Optional[str], has_cuda: bool) -> Optional[str]:
    """Why vLLM cannot honour ``device``, or None. vLLM runs on the device its build finds (a GPU when there
    is one), so the option may only name that device (Ray reads ``cuda`` to give its actors GPUs)."""
    runs_on = "cuda" if has_cuda else "cpu"
    if device is None or device == runs_on:
        return None
    return (
        f"option device={device!r}: the vllm engine runs on {runs_on} here and picks its device itself "
        "(choose GPUs with CUDA_VISIBLE_DEVICES)"
    )


def gpu_workers_refusal(workers: int, chosen: str, device: Optional[str]) -> Optional[str]:
    """Why ``workers`` server processes cannot each run the ``chosen`` engine here, or None: a GPU engine takes its
    device (its weights, its KV cache sized from the memory left), so a second process would load another copy
    onto the same GPU and fight the first for memory. Each worker batches every request it gets, so one engine per
    device is also the fast way to serve."""
    on_gpu = (device or "").startswith("cuda") or (device is None and engine_entry(chosen).gpu and _cuda_present())
    if workers == 1 or not on_gpu:
        return None
    return (
        f"--workers {workers} would load {workers} {chosen} engines onto one GPU: a GPU engine takes a whole device "
        "and batches every request itself. Serve with --workers 1, or run one server per GPU (--device cuda:N)"
    )


def _cuda_present() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def build_service(
    model_or_path: Any, server: ServerOptions, engine: EngineOptions, metrics: ServerMetrics
) -> ModelService:
    """Load the model and wrap it in the service of its engine (this may take a while for LLMs)."""
    from .agent import AgentService

    if isinstance(model_or_path, ModelService):
        return model_or_path
    if isinstance(model_or_path, (PyFuncModel, PythonModel)):
        refuse_unread_options(engine, "pyfunc")
        pyfunc = model_or_path if isinstance(model_or_path, PyFuncModel) else in_memory_pyfunc(model_or_path)
        return AgentService(pyfunc, server.max_threads)
    from servelm.flavors.uri import resolve_model_uri

    path = os.path.abspath(resolve_model_uri(model_or_path))
    chosen = choose_engine(path, engine.engine, engine.device)
    refuse_unread_options(engine, chosen)
    if chosen in ("transformers", "vllm") and _is_gguf(path):
        from servelm.flavors.transformers.gguf import gguf_checkpoint

        path = gguf_checkpoint(path)
    return engine_entry(chosen).builder()(path, server, engine, metrics)


def pyfunc_service(path: str, server: ServerOptions, options: EngineOptions, metrics: ServerMetrics) -> ModelService:
    """A python_function model directory (an agent, any PythonModel), served by its own code on threads."""
    from .agent import AgentService

    return AgentService(load_model(path), server.max_threads)


def require_extra(engine: str, modules: tuple[str, ...]) -> None:
    """Refuse, naming the extra to install, where an engine's modules are missing (before anything imports them
    and fails on the first one, which need not be the engine's own: ``No module named 'numpy'``)."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelFormatError(
            f"the {engine} engine needs {', '.join(missing)}, not installed here: pip install 'servelm[{engine}]'"
        )


def transformers_service(
    path: str, server: ServerOptions, options: EngineOptions, metrics: ServerMetrics
) -> ModelService:
    """A transformers-flavor directory or a bare Hugging Face checkpoint, served by the transformers engine.

    The model is loaded and stepped in an engine process of its own (``options.engine_process``, default
    on); this process keeps only the tokenizer, for chat templates.
    """
    require_extra("transformers", ("torch", "transformers", "tokenizers"))
    from servelm.flavors.generation.codec import HFCodec
    from servelm.flavors.transformers.chat import require_chat_template
    from servelm.flavors.transformers.flavor import context_length, load_tokenizer, locate_checkpoint

    from ..engines.process import ProcessEngine
    from ..engines.thread import ThreadEngine
    from .llm import LLMService

    runs_on = options.device or ("cuda" if _cuda_present() else "cpu")
    if options.gpu_memory_utilization is not None and not runs_on.startswith("cuda"):
        raise ModelFormatError(
            f"option gpu_memory_utilization applies to the transformers engine on a GPU; it runs on {runs_on} here"
            " (on a CPU the KV cache's memory is --kv-cache-memory)"
        )
    checkpoint = locate_checkpoint(path)
    tokenizer = load_tokenizer(checkpoint)
    require_chat_template(tokenizer, path)
    defaults = _request_defaults(checkpoint)
    saved = saved_engine_options(defaults, "transformers")  # applied when the option is not given
    dtype = options.dtype or saved.get("dtype")
    make_batcher = functools.partial(
        transformers_batcher,
        path,
        options.device,
        options.threads,
        dtype,
        options.max_num_seqs,
        options.quantization or saved.get("quantization"),
        options.kv_cache_memory,
        options.gpu_memory_utilization,
    )
    engine_class = ProcessEngine if options.engine_process else ThreadEngine
    engine = engine_class(make_batcher, context_length(checkpoint), tokenizer, on_step=metrics.batch_size.observe)
    return LLMService(
        engine,
        HFCodec(tokenizer),
        "llm/v1/chat (transformers engine)",
        defaults,
        metrics,
        options.tool_call_parser,
        options.max_request_sequences,
    )


def _request_defaults(checkpoint: Any) -> dict[str, Any]:
    """A request's defaults: the checkpoint's generation_config under the model_config saved with it."""
    from servelm.flavors.engine import generation_defaults

    local = checkpoint.weights if os.path.isdir(checkpoint.weights) else None
    return {**generation_defaults(local), **(checkpoint.meta.pyfunc_config() if checkpoint.meta is not None else {})}


@functools.lru_cache(maxsize=4)
def _loaded(
    path: str, device: Optional[str], threads: Optional[int], dtype: Optional[str], quantization: Optional[str]
) -> tuple[Any, Any, Any]:
    """(model, tokenizer, runner factory), loaded once per process: a batcher rebuilt after a failed step
    reuses them."""
    from servelm.flavors.engine.hf_batcher import model_runner_factory
    from servelm.flavors.transformers.flavor import load_checkpoint, locate_checkpoint

    model, tokenizer = load_checkpoint(locate_checkpoint(path), device, threads, dtype)
    return model, tokenizer, model_runner_factory(model, quantization, release_model=True)


def transformers_batcher(
    path: str,
    device: Optional[str],
    threads: Optional[int],
    dtype: Optional[str],
    max_num_seqs: int,
    quantization: Optional[str] = None,
    kv_cache_bytes: Optional[int] = None,
    gpu_memory_utilization: Optional[float] = None,
) -> Any:
    """The batcher of the model at ``path`` (called where the engine runs: the model loads there)."""
    from servelm.flavors.engine.hf_batcher import ContinuousBatcher

    model, tokenizer, runners = _loaded(path, device, threads, dtype, quantization)
    on_gpu = {"gpu_memory_utilization": gpu_memory_utilization} if gpu_memory_utilization else {}
    return ContinuousBatcher(model, tokenizer, max_num_seqs, runners=runners, kv_cache_bytes=kv_cache_bytes, **on_gpu)


def onnx_service(path: str, server: ServerOptions, options: EngineOptions, metrics: ServerMetrics) -> ModelService:
    """An onnx-flavor directory (or a bare onnxruntime-genai folder) served by the onnx engine: the model
    loads and steps in an engine process (``options.engine_process``); this process keeps the tokenizer
    and chat template."""
    require_extra("onnx", ("numpy", "tokenizers", "jinja2", "onnxruntime_genai"))
    from servelm.flavors.engine import generation_defaults
    from servelm.flavors.onnx.flavor import locate_folder
    from servelm.flavors.onnx.model import OnnxPrompts, chosen_provider, onnx_batcher

    from ..engines.process import ProcessEngine
    from ..engines.thread import ThreadEngine
    from .llm import LLMService

    folder, saved, defaults, _ = locate_folder(path)
    defaults = {**generation_defaults(folder), **defaults}
    saved_options = saved_engine_options(defaults, "onnx")  # applied when the option is not given
    prompts = OnnxPrompts.read(folder)
    if prompts.template is None:
        raise ModelFormatError(f"{folder} has no chat template: the onnx engine serves chat models")
    provider = chosen_provider(folder, options.device, saved)
    make_batcher = functools.partial(
        onnx_batcher,
        folder,
        provider,
        options.threads,
        options.max_num_seqs,
        options.kv_cache_dtype or saved_options.get("kv_cache_dtype"),
        options.kv_cache_memory,
    )
    engine_class = ProcessEngine if options.engine_process else ThreadEngine
    engine = engine_class(make_batcher, prompts.context_length, prompts.tokenizer, on_step=metrics.batch_size.observe)
    return LLMService(
        engine,
        prompts,
        f"llm/v1/chat (onnx engine on {provider})",
        defaults,
        metrics,
        options.tool_call_parser,
        options.max_request_sequences,
    )


def vllm_service(path: str, server: ServerOptions, options: EngineOptions, metrics: ServerMetrics) -> ModelService:
    """A transformers-flavor directory (its weights) or a bare Hugging Face checkpoint, served by vLLM."""
    from ..engines.vllm import INSTALL_HINT, VLLMEngine, vllm_available
    from .llm import LLMService

    if not vllm_available():
        raise ModelFormatError(INSTALL_HINT)
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError:
        raise ModelFormatError("the vllm engine needs torch and transformers (vLLM installs them)") from None
    refusal = vllm_device_refusal(options.device, torch.cuda.is_available())
    if refusal:
        raise ModelFormatError(refusal)
    from servelm.flavors.generation.codec import HFCodec
    from servelm.flavors.transformers.chat import require_chat_template
    from servelm.flavors.transformers.flavor import FLAVOR_NAME, load_tokenizer, locate_checkpoint

    if os.path.isfile(os.path.join(path, "MLmodel")) and FLAVOR_NAME not in Model.load(path).flavors:
        raise ModelFormatError(
            f"{path}: the vllm engine serves transformers-flavor directories and Hugging Face checkpoints"
        )
    checkpoint = locate_checkpoint(path)
    tokenizer = load_tokenizer(checkpoint)
    require_chat_template(tokenizer, path)
    defaults = _request_defaults(checkpoint)
    saved = saved_engine_options(defaults, "vllm")
    if saved.get("dtype") and not options.dtype:
        options = options.model_copy(update={"dtype": saved["dtype"]})
    engine = VLLMEngine(
        checkpoint.weights, checkpoint.tokenizer_dir, server.served_model_name or default_model_name(path), options
    )
    return LLMService(
        engine,
        HFCodec(tokenizer),
        "llm/v1/chat (vLLM engine)",
        defaults,
        metrics,
        options.tool_call_parser,
        options.max_request_sequences,
    )


def llamacpp_service(path: str, server: ServerOptions, options: EngineOptions, metrics: ServerMetrics) -> ModelService:
    """A GGUF file (or a directory holding one) served by llama.cpp with its quantization kept: this process
    keeps the tokenizer and chat template read from the file (tokenizers and jinja2, no torch)."""
    from servelm.flavors.generation.tokenizer_prompts import TokenizerPrompts
    from servelm.flavors.transformers.gguf import gguf_file, gguf_tokenizer_folder, is_gguf

    from ..engines.llamacpp import INSTALL_HINT, LlamaCppEngine, gguf_context_length
    from .llm import LLMService

    if not llamacpp_available():
        raise ModelFormatError(INSTALL_HINT)
    require_extra("llamacpp", ("gguf", "tokenizers", "jinja2"))
    defaults: dict[str, Any] = {}
    meta = Model.load(path) if os.path.isfile(os.path.join(path, "MLmodel")) else None
    saved = meta.flavors.get("transformers", {}) if meta is not None else {}
    if meta is not None and saved.get("gguf_file"):  # saved from a GGUF file: the file, and its tokenizer beside it
        file, folder = os.path.join(path, saved["gguf_file"]), os.path.join(path, "components", "tokenizer")
        defaults = meta.pyfunc_config()
        saved_engine_options(defaults, "llamacpp")
    elif is_gguf(path):
        file = gguf_file(path)
        # a directory may hold the tokenizer beside the file; else it is read from the file (once, cached)
        beside = os.path.isdir(path) and os.path.isfile(os.path.join(path, "tokenizer.json"))
        folder = path if beside else gguf_tokenizer_folder(file)
    else:
        raise ModelFormatError(
            f"{path}: the llamacpp engine serves GGUF files (a .gguf file, a directory with one, or a model "
            "directory saved from one)"
        )
    engine = LlamaCppEngine(file, options, gguf_context_length(file))
    prompts = TokenizerPrompts.from_folder(folder, engine.context_length, frozenset())
    if prompts.template is None:
        raise ModelFormatError(f"{file} has no chat template: the llamacpp engine serves chat models")
    return LLMService(
        engine,
        prompts,
        "llm/v1/chat (llamacpp engine)",
        defaults,
        metrics,
        options.tool_call_parser,
        options.max_request_sequences,
    )
