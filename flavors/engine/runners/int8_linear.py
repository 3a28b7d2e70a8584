"""Linear layers in int8 on CPU (``quantization="int8"`` of the transformers engine).

Weights are quantized once at load, symmetric per output channel; activations are quantized per step
(one scale per call, from the step's own range) and the product runs on fbgemm's int8 GEMM (AVX512-VNNI
or AVX2 kernels), the scheme of vLLM's and torchao's dynamic w8a8. Against bf16 weights a decode step
streams half the weight bytes and a prompt step computes on the int8 units; the answers differ from the
unquantized model's more than bf16's do (the runner keeps the layers that lose the most in the model dtype,
``llama.py``), so it is a choice the user makes.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

from ...transformers.device import cpu_has_vnni

#: the values the ``quantization`` option takes
QUANTIZATIONS = ("int8",)


def int8_unavailable_reason(device: Any) -> Optional[str]:
    """Why int8 linears cannot run on ``device`` here (None when they can)."""
    import torch

    if device.type != "cpu":
        return f"int8 quantization runs on CPU (fbgemm); the model is on {device.type}"
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        return "this torch build has no fbgemm int8 kernels"
    return None


def pack_int8(weight: Any, bias: Any) -> Any:
    """``weight`` [out, in] (and ``bias`` [out]) quantized per output channel and packed for fbgemm."""
    import torch

    weight = weight.detach().float().contiguous()  # [out, in]
    scales = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()  # [out]
    zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # torch marks its quantized tensor API deprecated; the kernels are current
        warnings.simplefilter("ignore")
        quantized = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(quantized, bias.detach().float() if bias is not None else None)


def int8_linear(x: Any, packed: Any, dtype: Any) -> Any:
    """``x`` [tokens, in] times the packed weight, in ``dtype`` [tokens, out]; the activations are quantized
    over this call's own range (without the 7-bit range that CPUs lacking VNNI need against overflow)."""
    import torch

    return torch.ops.quantized.linear_dynamic(x.float(), packed, not cpu_has_vnni()).to(dtype)
