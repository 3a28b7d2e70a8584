"""Opening a genai folder for serving: the execution provider is chosen deliberately, never a silent CPU fallback."""

import pytest

pytest.importorskip("onnxruntime_genai")
pytest.importorskip("torch")

from servelm.flavors import ModelFormatError  # noqa: E402
from servelm.flavors.onnx import load_model  # noqa: E402


def test_unavailable_provider_is_an_error_not_a_silent_cpu_run(onnx_dir):
    import onnxruntime_genai as og

    if og.is_cuda_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelFormatError, match="not available"):
        load_model(onnx_dir, execution_provider="cuda")
