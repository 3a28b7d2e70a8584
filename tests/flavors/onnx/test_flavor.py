"""The onnx flavor: save (MLmodel blocks, chat template checked, text-generation task) and load back as
onnxruntime-genai's own objects."""

import json
import os
import shutil

import pytest

pytest.importorskip("onnxruntime_genai")
pytest.importorskip("torch")

from servelm.flavors import Model, ModelFormatError  # noqa: E402
from servelm.flavors.onnx import load_model, save_model  # noqa: E402
from servelm.flavors.pyfunc import load_model as load_pyfunc  # noqa: E402


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
