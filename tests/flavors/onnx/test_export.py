"""Export with onnxruntime-genai's model builder: the folder it writes, errors a user can act on, and
greedy parity with the transformers flavor for every supported architecture."""

import json
import os

import pytest

pytest.importorskip("onnxruntime_genai")
pytest.importorskip("torch")

from servelm.flavors import ModelFormatError  # noqa: E402
from servelm.flavors.onnx import export, save_model  # noqa: E402
from servelm.flavors.pyfunc import load_model as load_pyfunc  # noqa: E402
from servelm.flavors.transformers import save_model as save_transformers  # noqa: E402
from servelm.flavors.transformers import tiny_model  # noqa: E402


def test_export_writes_a_genai_folder(tiny_llama_genai):
    files = set(os.listdir(tiny_llama_genai))
    assert {"genai_config.json", "model.onnx", "tokenizer.json", "chat_template.jinja"} <= files
    assert json.load(open(os.path.join(tiny_llama_genai, "servelm-export.json")))["precision"] == "fp32"


def test_export_errors_are_actionable(tmp_path, tiny_llama):
    with pytest.raises(ModelFormatError, match="does not run on cpu"):
        export(tiny_llama, str(tmp_path / "a"), precision="fp16", execution_provider="cpu")
    with pytest.raises(ModelFormatError, match="precision"):
        export(tiny_llama, str(tmp_path / "b"), precision="fp8")
    with pytest.raises(ModelFormatError, match="no config.json"):
        export(str(tmp_path), str(tmp_path / "c"))


@pytest.mark.parametrize("arch", ["qwen2", "phi3"])
def test_other_architectures_export_with_parity(tmp_path, arch, chat_request):
    source = tiny_model(arch)
    folder = export(source, str(tmp_path / "genai"))
    save_model(folder, str(tmp_path / "onnx"))
    save_transformers(source, str(tmp_path / "tf"))
    request = {**chat_request, "max_tokens": 12}
    ours = load_pyfunc(str(tmp_path / "onnx")).predict(request)[0]["choices"][0]["message"]["content"]
    theirs = load_pyfunc(str(tmp_path / "tf"), model_config={"dtype": "float32"})  # the export's precision
    assert ours == theirs.predict(request)[0]["choices"][0]["message"]["content"]
