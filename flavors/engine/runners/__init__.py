"""Model runners (the ``ModelRunner`` contract of ``model_runner.py``): a Llama-family decoder in torch
(``llama.py``), any Hugging Face model's own forward (``hf_forward.py``), and onnxruntime on an exported
decoder (``onnx.py``, cut at its attention nodes by ``onnx_layered.py``)."""
