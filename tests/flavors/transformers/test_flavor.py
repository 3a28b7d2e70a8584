"""The transformers flavor: save from a path, a dict or a pipeline (or as a reference only); load back."""

import os

import pytest
import yaml

pytest.importorskip("torch")

from servelm.flavors import ModelFormatError  # noqa: E402
from servelm.flavors.transformers import load_model, save_model  # noqa: E402


def test_save_from_path_layout_and_mlmodel(tmp_path, tiny_llama):
    save_model(tiny_llama, str(tmp_path / "m"))
    files = set(os.listdir(tmp_path / "m"))
    assert {
        "MLmodel",
        "model",
        "components",
        "requirements.txt",
        "python_env.yaml",
        "conda.yaml",
        "input_example.json",
    } <= files
    assert "model.safetensors" in os.listdir(tmp_path / "m" / "model")
    assert "tokenizer.json" in os.listdir(tmp_path / "m" / "components" / "tokenizer")
    mlmodel = yaml.safe_load((tmp_path / "m" / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["transformers"]
    for key in (
        "task",
        "instance_type",
        "source_model_name",
        "framework",
        "torch_dtype",
        "transformers_version",
        "components",
        "model_binary",
    ):
        assert key in flavor, key
    assert mlmodel["metadata"]["task"] == "llm/v1/chat"
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "servelm.flavors.transformers.loader"
    assert "messages" in mlmodel["signature"]["inputs"]
    reqs = (tmp_path / "m" / "requirements.txt").read_text()
    assert "torch==" in reqs and "transformers==" in reqs


def test_save_from_dict_and_pipeline_and_load_back(tmp_path, tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    components = {
        "model": AutoModelForCausalLM.from_pretrained(tiny_llama),
        "tokenizer": AutoTokenizer.from_pretrained(tiny_llama),
    }
    save_model(components, str(tmp_path / "d"))
    save_model(
        pipeline("text-generation", model=components["model"], tokenizer=components["tokenizer"]), str(tmp_path / "p")
    )
    loaded = load_model(str(tmp_path / "d"), return_type="components")
    assert set(loaded) == {"model", "tokenizer"} and loaded["tokenizer"].chat_template
    assert type(load_model(str(tmp_path / "p"))).__name__ == "TextGenerationPipeline"


def test_missing_chat_template_fails_at_save(tmp_path, tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tokenizer.chat_template = None
    with pytest.raises(ModelFormatError, match="no chat template"):
        save_model(
            {"model": AutoModelForCausalLM.from_pretrained(tiny_llama), "tokenizer": tokenizer}, str(tmp_path / "m")
        )
    assert not (tmp_path / "m").exists()


def test_reference_only_save_and_text_generation(tmp_path, tiny_llama):
    from servelm.flavors.pyfunc import load_model as load_pyfunc

    save_model(
        tiny_llama,
        str(tmp_path / "ref"),
        save_pretrained=False,
        task="text-generation",
        model_config={"max_new_tokens": 4, "temperature": 0},
    )
    assert "model" not in os.listdir(tmp_path / "ref")
    mlmodel = yaml.safe_load((tmp_path / "ref" / "MLmodel").read_text())
    assert mlmodel["flavors"]["transformers"]["source_model_name"] == tiny_llama
    out = load_pyfunc(str(tmp_path / "ref")).predict(["hello there", "the model"])
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
