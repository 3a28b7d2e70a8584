"""Model runners (the ``ModelRunner`` contract of ``model_runner.py``): a Llama-family decoder in torch
(``llama.py``), any Hugging Face model's own forward (``hf_forward.py``), and onnxruntime on an exported
decoder (``onnx.py``, cut at its attention nodes by ``onnx_layered.py``); the linear layers the Llama runner uses
beside torch's: int8 (``int8_linear.py``) and fp32 steps of a few tokens (``skinny_linear.py``)."""
