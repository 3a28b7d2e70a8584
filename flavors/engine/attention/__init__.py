"""Attention over the paged KV cache: the numba CPU kernel (``cpu_kernel.py``, on the CPU's bf16 dot products where
there are some: ``bf16_intrinsics.py``), the Triton GPU kernel (``triton_paged.py``), the torch reference any device
runs (``paged_torch.py``), and the onnx runner's fused rotary and cache writes (``cache_writes.py``)."""
