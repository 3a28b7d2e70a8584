"""Picking and building the service for what ``servelm serve -m`` points at: the engine by flavor (or a
bare checkpoint's files), the name clients use, and bare checkpoints served as they are."""

import os

import pytest
import yaml

from servelm.agents import ChatAgent
from servelm.flavors import ModelFormatError
from servelm.serving.services.build import choose_engine, default_model_name


def mlmodel(path, *flavors):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "MLmodel"), "w") as f:
        yaml.safe_dump({"flavors": {name: {} for name in flavors}}, f)
    return str(path)


def test_engine_by_flavor_transformers_first(tmp_path):
    assert choose_engine(mlmodel(tmp_path / "t", "python_function", "transformers"), None) == "transformers"
    assert choose_engine(mlmodel(tmp_path / "o", "python_function", "onnx"), None) == "onnx"
    assert choose_engine(mlmodel(tmp_path / "p", "python_function"), None) == "pyfunc"
    with pytest.raises(ModelFormatError, match="no servable flavor"):
        choose_engine(mlmodel(tmp_path / "x", "weird"), None)


def test_engine_of_bare_folders(tmp_path):
    (tmp_path / "genai").mkdir()
    (tmp_path / "genai" / "genai_config.json").write_text("{}")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    assert choose_engine(str(tmp_path / "genai"), None) == "onnx"
    assert choose_engine(str(tmp_path / "hf"), None) == "transformers"
    with pytest.raises(ModelFormatError, match="no MLmodel file and is not a Hugging Face checkpoint"):
        choose_engine(str(tmp_path), None)
    with pytest.raises(ModelFormatError, match="not a directory"):
        choose_engine(str(tmp_path / "missing"), None)


def test_a_forced_engine_wins_and_must_exist(tmp_path):
    assert choose_engine(mlmodel(tmp_path / "t", "transformers"), "vllm") == "vllm"
    with pytest.raises(ModelFormatError, match="unknown engine 'tgi'"):
        choose_engine(str(tmp_path), "tgi")


def test_default_model_name(tmp_path):
    class MyAgent(ChatAgent):
        pass

    assert default_model_name(str(tmp_path / "my-model")) == "my-model"
    assert default_model_name(str(tmp_path / "my-model") + "/") == "my-model"
    assert default_model_name(tmp_path / "other") == "other"
    assert default_model_name(MyAgent()) == "MyAgent"


def test_engine_is_chosen_by_flavor(tiny_onnx_dir, tiny_llama_genai, tiny_llama_dir, tiny_llama):
    assert choose_engine(tiny_onnx_dir, None) == "onnx"
    assert choose_engine(tiny_llama_genai, None) == "onnx"
    assert choose_engine(tiny_llama_dir, None) == "transformers"
    assert choose_engine(tiny_llama, None) == "transformers"


@pytest.mark.parametrize("folder", ["tiny_llama", "tiny_llama_genai"], ids=["hf-checkpoint", "genai-folder"])
def test_bare_folder_is_served(request, folder, serve, openai_client):
    path = request.getfixturevalue(folder)
    with serve(path) as (base, _):
        reply = openai_client(base).chat.completions.create(
            model=path.rsplit("/", 1)[-1], messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        assert reply.usage.completion_tokens <= 3


def runner_after_a_reply(serve, openai_client, path, **options):
    """The model runner of ``path`` served on a thread with ``options``, once it has answered a short chat."""
    with serve(path, engine_process=False, **options) as (base, app):
        reply = openai_client(base).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0
        )
        assert reply.usage.completion_tokens <= 4 and reply.choices[0].message.content is not None
        return app.state.servelm.service.engine.driver.batcher.runner


@pytest.mark.parametrize("where", ["option", "model_config"])
def test_int8_quantization_serves_the_transformers_engine(where, tiny_llama, tmp_path, serve, openai_client):
    from servelm.flavors.engine.runners.llama import TorchRunner
    from servelm.flavors.transformers import save_model

    path = str(tmp_path / "tiny")
    save_model(tiny_llama, path, model_config={"quantization": "int8"} if where == "model_config" else None)
    options = {"quantization": "int8"} if where == "option" else {}
    runner = runner_after_a_reply(serve, openai_client, path, **options)
    assert isinstance(runner, TorchRunner) and runner.w.int8


@pytest.mark.parametrize("where", ["option", "model_config"])
def test_kv_cache_dtype_chooses_how_the_onnx_engine_runs_its_export(
    where, tiny_llama_genai, tmp_path, serve, openai_client
):
    from servelm.flavors.onnx import save_model

    path = str(tmp_path / "tiny")
    save_model(tiny_llama_genai, path, model_config={"kv_cache_dtype": "float32"} if where == "model_config" else None)
    options = {"kv_cache_dtype": "float32"} if where == "option" else {}
    runner = runner_after_a_reply(serve, openai_client, path, **options)
    assert runner.d.layered is None and runner.d.cache_dtype.__name__ == "float32"  # the whole graph, its own attention


def test_quantization_is_refused_for_other_engines(tiny_llama_genai):
    from servelm.serving.metrics import ServerMetrics
    from servelm.serving.options import EngineOptions, ServerOptions
    from servelm.serving.services.build import build_service

    with pytest.raises(ModelFormatError, match="exported"):
        build_service(tiny_llama_genai, ServerOptions(), EngineOptions(quantization="int8"), ServerMetrics())


@pytest.mark.parametrize(
    "option", [{"dtype": "float32"}, {"max_model_len": 512}, {"enforce_eager": True}], ids=lambda o: next(iter(o))
)
def test_options_the_chosen_engine_would_not_read_are_refused(tiny_llama_genai, option):
    from servelm.serving.options import EngineOptions
    from servelm.serving.services.build import refuse_unread_options

    name = next(iter(option))
    with pytest.raises(ModelFormatError, match=f"option {name} applies to"):
        refuse_unread_options(EngineOptions(**option), "onnx")
    refuse_unread_options(EngineOptions(**option), "vllm")  # vLLM reads each of them


def test_kv_cache_dtype_is_refused_for_other_engines():
    from servelm.serving.options import EngineOptions
    from servelm.serving.services.build import refuse_unread_options, saved_engine_options

    for engine in ("transformers", "vllm"):
        with pytest.raises(ModelFormatError, match="option kv_cache_dtype applies to the onnx engine"):
            refuse_unread_options(EngineOptions(kv_cache_dtype="bfloat16"), engine)
    with pytest.raises(ModelFormatError, match="model_config sets kv_cache_dtype='float32'.* not transformers"):
        saved_engine_options({"kv_cache_dtype": "float32"}, "transformers")


@pytest.mark.parametrize(
    "option",
    [{"threads": 2}, {"tool_call_parser": "hermes"}, {"engine_process": False}, {"max_num_seqs": 8}, {"device": "cpu"}],
    ids=lambda o: next(iter(o)),
)
def test_llm_engine_options_are_refused_for_a_pyfunc_agent(option):
    from servelm.agents import ChatAgent
    from servelm.serving.metrics import ServerMetrics
    from servelm.serving.options import EngineOptions, ServerOptions
    from servelm.serving.services.build import build_service, refuse_unread_options

    class Echo(ChatAgent):
        def predict(self, messages, context=None, custom_inputs=None):
            raise NotImplementedError

    name = next(iter(option))
    with pytest.raises(ModelFormatError, match=f"option {name} applies to .* not pyfunc .*its own code"):
        build_service(Echo(), ServerOptions(), EngineOptions(**option), ServerMetrics())
    refuse_unread_options(EngineOptions(**option), "transformers")  # the transformers engine reads each of them


def test_engine_options_saved_in_model_config_must_suit_the_engine():
    from servelm.serving.services.build import saved_engine_options

    defaults = {"quantization": "int8", "dtype": "bfloat16", "temperature": 0.5}
    with pytest.raises(ModelFormatError, match="model_config sets quantization='int8'.* not onnx"):
        saved_engine_options({"quantization": "int8"}, "onnx")
    with pytest.raises(ModelFormatError, match="model_config sets dtype='bfloat16'.* not onnx"):
        saved_engine_options(dict(defaults), "onnx")
    with pytest.raises(ModelFormatError, match="quantization.* not vllm"):
        saved_engine_options(dict(defaults), "vllm")
    assert saved_engine_options(defaults, "transformers") == {"quantization": "int8", "dtype": "bfloat16"}
    assert defaults == {"temperature": 0.5}  # taken out of the request defaults
    assert saved_engine_options({"dtype": "bfloat16"}, "vllm") == {"dtype": "bfloat16"}


def test_vllm_takes_only_the_device_it_runs_on():
    from servelm.serving.services.build import vllm_device_refusal

    assert vllm_device_refusal(None, False) is None and vllm_device_refusal("cpu", False) is None
    assert vllm_device_refusal("cuda", True) is None  # what Ray reads to give GPU actors their GPUs
    assert "runs on cpu" in (vllm_device_refusal("cuda", False) or "")
    assert "CUDA_VISIBLE_DEVICES" in (vllm_device_refusal("cuda:1", True) or "")
    assert "runs on cuda" in (vllm_device_refusal("cpu", True) or "")


@pytest.mark.parametrize("engine", ["onnx", "transformers"])
def test_a_missing_engine_extra_is_named(engine, tmp_path, monkeypatch):
    """Without numpy (the onnx extra's first import) or torch, serving names the extra to install, not the module
    that happened to fail first."""
    import importlib.util

    from servelm.serving.metrics import ServerMetrics
    from servelm.serving.options import EngineOptions, ServerOptions
    from servelm.serving.services import build

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("numpy", "torch") else real(name, *a)
    )
    builder = build.onnx_service if engine == "onnx" else build.transformers_service
    with pytest.raises(ModelFormatError, match=rf"the {engine} engine needs .*pip install 'servelm\[{engine}\]'"):
        builder(str(tmp_path), ServerOptions(), EngineOptions(), ServerMetrics())


def test_auto_serves_a_transformers_model_on_vllm_where_cuda_and_vllm_are_there(tmp_path, monkeypatch):
    """No CUDA device here: the device check is the one part replaced (a CUDA machine runs ``_vllm_on_cuda`` as is)."""
    from servelm.serving.services import build

    model = mlmodel(tmp_path / "t", "python_function", "transformers")
    assert choose_engine(model, None) == "transformers"  # this machine: no CUDA device
    monkeypatch.setattr(build, "_vllm_on_cuda", lambda: True)
    assert choose_engine(model, None) == choose_engine(model, "auto") == "vllm"
    assert choose_engine(model, None, device="cpu") == "transformers"  # the CPU asked for: the own engine
    assert choose_engine(model, "transformers") == "transformers"  # an engine named is taken as named
    assert choose_engine(mlmodel(tmp_path / "o", "python_function", "onnx"), None) == "onnx"


def test_several_workers_with_a_gpu_engine_are_refused_with_the_reason(monkeypatch):
    from servelm.serving.services import build

    assert build.gpu_workers_refusal(2, "transformers", None) is None  # no CUDA device here: CPU engines, one each
    assert build.gpu_workers_refusal(1, "transformers", "cuda") is None
    refusal = build.gpu_workers_refusal(2, "transformers", "cuda:1")
    assert refusal is not None and "one GPU" in refusal and "--workers 1" in refusal and "--device cuda:N" in refusal
    assert build.gpu_workers_refusal(2, "onnx", "cuda") is not None
    monkeypatch.setattr(build, "_cuda_present", lambda: True)
    assert build.gpu_workers_refusal(4, "vllm", None) is not None
    assert build.gpu_workers_refusal(4, "transformers", "cpu") is None
    assert build.gpu_workers_refusal(4, "onnx", None) is None  # a CPU export runs on the CPU
    assert build.gpu_workers_refusal(4, "pyfunc", None) is None


def test_the_cli_refuses_gpu_workers_before_loading(tiny_llama_dir, tmp_path):
    """``servelm serve --workers 2 --device cuda`` exits 2 with the reason before it binds or loads anything."""
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "servelm.serving.cli",
            "serve",
            "-m",
            tiny_llama_dir,
            "--workers",
            "2",
            "--device",
            "cuda",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "would load 2 transformers engines onto one GPU" in result.stderr


def test_gpu_memory_utilization_on_a_cpu_is_refused_naming_the_cpu_option(tiny_llama_dir):
    from servelm.serving.metrics import ServerMetrics
    from servelm.serving.options import EngineOptions, ServerOptions
    from servelm.serving.services.build import transformers_service

    with pytest.raises(ModelFormatError, match="gpu_memory_utilization applies to the transformers engine on a GPU"):
        transformers_service(
            tiny_llama_dir, ServerOptions(), EngineOptions(gpu_memory_utilization=0.5, device="cpu"), ServerMetrics()
        )
