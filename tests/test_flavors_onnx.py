"""The onnx flavor: export with onnxruntime-genai's builder, save / load, pyfunc chat, greedy parity with
the transformers flavor of the same checkpoint, and errors a user can act on."""

import json
import os
import shutil

import pytest

pytest.importorskip("onnxruntime_genai")
pytest.importorskip("torch")

from servelm.flavors import Model, ModelFormatError  # noqa: E402
from servelm.flavors.onnx import export, load_model, save_model  # noqa: E402
from servelm.flavors.pyfunc import load_model as load_pyfunc  # noqa: E402
from servelm.flavors.transformers import save_model as save_transformers  # noqa: E402
from servelm.flavors.transformers import tiny_model  # noqa: E402

CHAT = {"messages": [{"role": "user", "content": "hello there, what is the model"}], "max_tokens": 24, "temperature": 0}


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory, tiny_llama_genai):
    path = str(tmp_path_factory.mktemp("onnx") / "tiny-onnx")
    save_model(tiny_llama_genai, path, model_config={"max_tokens": 40})
    return path


@pytest.fixture(scope="module")
def transformers_pyfunc(tmp_path_factory, tiny_llama):
    path = str(tmp_path_factory.mktemp("tf") / "tiny-tf")
    save_transformers(tiny_llama, path)
    return load_pyfunc(path)


def test_export_writes_a_genai_folder(tiny_llama_genai):
    files = set(os.listdir(tiny_llama_genai))
    assert {"genai_config.json", "model.onnx", "tokenizer.json", "chat_template.jinja"} <= files
    assert json.load(open(os.path.join(tiny_llama_genai, "servelm-export.json")))["precision"] == "fp32"


def test_mlmodel_has_onnx_and_pyfunc_blocks(onnx_dir):
    meta = Model.load(onnx_dir)
    onnx = meta.flavor("onnx")
    assert onnx["providers"] == ["cpu"] and onnx["precision"] == "fp32" and onnx["onnxruntime_genai_version"]
    assert os.path.isfile(os.path.join(onnx_dir, onnx["genai_config"]))
    assert meta.flavor("python_function")["loader_module"] == "servelm.flavors.onnx.loader"
    assert meta.task == "llm/v1/chat" and meta.signature is not None
    assert os.path.isfile(os.path.join(onnx_dir, "input_example.json"))
    assert "onnxruntime-genai" in open(os.path.join(onnx_dir, "requirements.txt")).read()


def test_load_model_returns_native_objects(onnx_dir):
    import onnxruntime_genai as og

    assert isinstance(load_model(onnx_dir), og.Model)
    parts = load_model(onnx_dir, return_type="components")
    assert isinstance(parts["tokenizer"], og.Tokenizer)


def test_pyfunc_chat_matches_transformers_greedy(onnx_dir, transformers_pyfunc):
    model = load_pyfunc(onnx_dir)
    ours, theirs = model.predict(CHAT), transformers_pyfunc.predict(CHAT)
    assert ours["choices"][0]["message"]["content"] == theirs["choices"][0]["message"]["content"]
    assert ours["usage"] == theirs["usage"] and ours["choices"][0]["finish_reason"] == "length"


def test_a_list_of_requests_is_one_batch_with_parity(onnx_dir, transformers_pyfunc):
    requests = [{"messages": [{"role": "user", "content": f"q {i} " * (i + 1)}], "max_tokens": 12, "temperature": 0} for i in range(6)]
    ours = [r["choices"][0]["message"]["content"] for r in load_pyfunc(onnx_dir).predict(requests)]
    theirs = [r["choices"][0]["message"]["content"] for r in transformers_pyfunc.predict(requests)]
    assert ours == theirs


def test_predict_stream_yields_chat_chunks(onnx_dir):
    model = load_pyfunc(onnx_dir)
    chunks = list(model.predict_stream({**CHAT, "max_tokens": 6}))
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == model.predict({**CHAT, "max_tokens": 6})["choices"][0]["message"]["content"]


def test_stop_strings_seed_n_and_defaults(onnx_dir):
    model = load_pyfunc(onnx_dir)
    full = model.predict(CHAT)["choices"][0]["message"]["content"]
    stop = full.split(" ")[1][:2]
    cut = model.predict({**CHAT, "stop": [stop]})["choices"][0]
    assert cut["finish_reason"] == "stop" and cut["message"]["content"] == full[: full.index(stop)]
    sampled = {**CHAT, "temperature": 0.9, "top_p": 0.9, "top_k": 20, "seed": 7, "n": 2}
    a, b = model.predict(sampled), model.predict(sampled)
    assert [c["message"]["content"] for c in a["choices"]] == [c["message"]["content"] for c in b["choices"]]
    assert a["choices"][0]["message"]["content"] != a["choices"][1]["message"]["content"]
    assert model.predict({"messages": CHAT["messages"], "temperature": 0})["usage"]["completion_tokens"] == 40  # model_config max_tokens


def test_ignore_eos_and_max_length(onnx_dir):
    model = load_pyfunc(onnx_dir)
    reply = model.predict({**CHAT, "max_tokens": 300, "temperature": 1.0, "ignore_eos": True})
    assert reply["usage"]["completion_tokens"] == 300 and reply["choices"][0]["finish_reason"] == "length"


def test_prompt_with_the_pad_id_is_generated_as_given(onnx_dir, transformers_pyfunc):
    # the pad token is a real token here (the user typed it): neither flavor may mask it out
    request = {"messages": [{"role": "user", "content": "<|endoftext|> hello <|endoftext|>"}], "max_tokens": 10, "temperature": 0}
    assert load_pyfunc(onnx_dir).predict(request)["choices"][0]["message"]["content"] == transformers_pyfunc.predict(request)["choices"][0]["message"]["content"]


def test_text_generation_task(tmp_path, tiny_llama_genai):
    save_model(tiny_llama_genai, str(tmp_path / "tg"), task="text-generation")
    out = load_pyfunc(str(tmp_path / "tg")).predict(["the model", "a server"], params={"max_new_tokens": 5})
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


def test_missing_chat_template_is_caught_at_save(tmp_path, tiny_llama_genai):
    folder = tmp_path / "no-template"
    shutil.copytree(tiny_llama_genai, folder)
    os.remove(folder / "chat_template.jinja")
    config = json.load(open(folder / "tokenizer_config.json"))
    config.pop("chat_template", None)
    json.dump(config, open(folder / "tokenizer_config.json", "w"))
    with pytest.raises(ModelFormatError, match="chat template"):
        save_model(str(folder), str(tmp_path / "m"))


def test_export_errors_are_actionable(tmp_path, tiny_llama):
    with pytest.raises(ModelFormatError, match="does not run on cpu"):
        export(tiny_llama, str(tmp_path / "a"), precision="fp16", execution_provider="cpu")
    with pytest.raises(ModelFormatError, match="precision"):
        export(tiny_llama, str(tmp_path / "b"), precision="fp8")
    with pytest.raises(ModelFormatError, match="no config.json"):
        export(str(tmp_path), str(tmp_path / "c"))


def test_unavailable_provider_is_an_error_not_a_silent_cpu_run(onnx_dir):
    import onnxruntime_genai as og

    if og.is_cuda_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelFormatError, match="not available"):
        load_model(onnx_dir, execution_provider="cuda")


@pytest.mark.parametrize("arch", ["qwen2", "phi3"])
def test_other_architectures_export_with_parity(tmp_path, arch):
    source = tiny_model(arch)
    folder = export(source, str(tmp_path / "genai"))
    save_model(folder, str(tmp_path / "onnx"))
    save_transformers(source, str(tmp_path / "tf"))
    request = {**CHAT, "max_tokens": 12}
    ours = load_pyfunc(str(tmp_path / "onnx")).predict(request)["choices"][0]["message"]["content"]
    assert ours == load_pyfunc(str(tmp_path / "tf")).predict(request)["choices"][0]["message"]["content"]
