"""The onnx flavor's shared fixtures: the exported tiny Llama saved as an onnx-flavor directory, the
same checkpoint as a transformers pyfunc (the greedy reference), and the chat request both answer."""

import pytest


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory, tiny_llama_genai):
    """The onnx-flavor directory (model_config max_tokens 40: the default the pyfunc applies)."""
    from servelm.flavors.onnx import save_model

    path = str(tmp_path_factory.mktemp("onnx") / "tiny-onnx")
    save_model(tiny_llama_genai, path, model_config={"max_tokens": 40})
    return path


@pytest.fixture(scope="session")
def transformers_pyfunc(tmp_path_factory, tiny_llama):
    """The same checkpoint through the transformers flavor's pyfunc, in float32 like the export (its "auto"
    dtype is bf16 on CPUs with native bf16: greedy text would drift apart after a few tokens)."""
    from servelm.flavors.pyfunc import load_model
    from servelm.flavors.transformers import save_model

    path = str(tmp_path_factory.mktemp("tf") / "tiny-tf")
    save_model(tiny_llama, path)
    return load_model(path, model_config={"dtype": "float32"})


@pytest.fixture(scope="session")
def chat_request():
    """A greedy chat request long enough to tell two generations apart (copy it before changing it)."""
    return {
        "messages": [{"role": "user", "content": "hello there, what is the model"}],
        "max_tokens": 24,
        "temperature": 0,
    }
