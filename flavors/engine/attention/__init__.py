"""Attention over the KV cache: the numba CPU kernel (``cpu_kernel.py``, on the CPU's bf16 dot products where
there are some: ``bf16_intrinsics.py``) and the onnx runner's fused rotary and cache writes (``cache_writes.py``)."""
