"""The transformers engine's model runner: a Llama-family decoder's forward pass written directly in torch
over the weights of a loaded Hugging Face model, with a paged KV cache (the ``ModelRunner`` the scheduler drives).

Why not the model's own forward: on a small model most of a decode step is Python (module calls, mask
and cache bookkeeping), not arithmetic. Here a layer is a dozen tensor ops; on CPUs with native bf16 the
linear layers run oneDNN kernels on weights packed once at load. In fp32 on a CPU (AVX2-only servers), steps
of a few tokens run each linear layer with the norm, gate or skip connection around it in one numba kernel
(``skinny_linear.py``) and turn and write their keys in another (``attention/cache_writes.py``): with attention, a
decode layer is six kernel calls. The cache stays in the model's dtype (a
bf16 step reads half the bytes of fp32). On CPU a decode step's attention is one kernel over the block pools
(``attention/cpu_kernel.py``), and so is a prompt chunk's where the CPU has bf16 instructions; on a GPU every
token's attention is one Triton kernel (``attention/triton_paged.py``); elsewhere torch's attention runs over each
sequence's blocks gathered (``attention/paged_torch.py``).

Covers the architectures whose layers are RMSNorm -> GQA attention with rotary embeddings -> gated
SiLU MLP: Llama (SmolLM, TinyLlama...), Mistral without sliding windows, Qwen2 (q/k/v biases) and Phi3
(fused projections). ``unsupported_reason`` says why another model falls back to ``hf_forward.py``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Optional

import numpy as np

from ..attention.cache_writes import cache_writer
from ..attention.cpu_kernel import decode_kernel, on_bf16_instructions, set_kernel_threads
from ..attention.paged_torch import chunk_attention, decode_attention
from ..attention.shared_prefix import flash_with_lse, shared_prefix_attention, shared_prefix_groups
from ..attention.triton_paged import paged_attention
from ..memory import block_runs, release_blocks, zeroed_array
from ..model_runner import Chunk, StepBatch
from ..sample.choice import RowSampling, TokenChoice
from ..sample.torch_sampler import sample_next
from .cuda_graphs import SIZES, DecodeGraphs
from .int8_linear import QUANTIZATIONS, int8_linear, int8_unavailable_reason, pack_int8
from .skinny_linear import skinny_kernel, skinny_linear, skinny_window

log = logging.getLogger("servelm.engine")

ARCHITECTURES = ("llama", "mistral", "qwen2", "phi3")
#: how many of each token's highest logits are recomputed in fp32 (``TorchRunner.logits``)
EXACT_TOP = 8
#: steps of more tokens than this run the linear layers padded to a multiple of ``STEP_BUCKET``
EXACT_STEP_TOKENS = 32
STEP_BUCKET = 16
_ROPE_TYPES = ("default", "linear", "llama3", "yarn")  # fixed frequencies, computed once by transformers


def text_config(config: Any) -> Any:
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def unsupported_reason(model: Any) -> Optional[str]:
    """Why this runner cannot run ``model`` (None when it can)."""
    config = text_config(model.config)
    if config.model_type not in ARCHITECTURES:
        return f"architecture {config.model_type!r} (the runner covers {', '.join(ARCHITECTURES)})"
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or []):
        return "sliding-window layers"
    window = getattr(config, "sliding_window", None)
    if window is not None and getattr(config, "use_sliding_window", True) and window < config.max_position_embeddings:
        return "a sliding window"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    kind = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    if kind not in _ROPE_TYPES:
        return f"rope type {kind!r}"
    rotary = getattr(getattr(model, "model", None), "rotary_emb", None)
    if rotary is None or not hasattr(rotary, "inv_freq"):
        return "no rotary embedding module to read frequencies from"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r}"
    return None


class LlamaWeights:
    """The weights of a loaded Llama-family model, laid out for the runner (shared by every runner of
    the model; read-only). ``dtype`` is the compute dtype of the linear layers; ``quantization="int8"``
    runs them in int8 instead (``int8_linear.py``), all but the MLP's down projections: their input, the
    gated product, loses the most to int8 activations, and in the model dtype they keep the answers much
    closer to the unquantized model's for a small share of the weights."""

    def __init__(self, model: Any, dtype: Any, quantization: Optional[str] = None):
        import torch

        self.torch = torch
        config = text_config(model.config)
        self.device = next(model.parameters()).device
        self.dtype = dtype
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.hidden = config.hidden_size
        self.eps = config.rms_norm_eps
        self.context_length = int(getattr(config, "max_position_embeddings", 0) or 2048)
        on_cpu = self.device.type == "cpu"
        if quantization not in (None, *QUANTIZATIONS):
            raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}; got {quantization!r}")
        reason = int8_unavailable_reason(self.device) if quantization else None
        if reason:
            raise ValueError(reason)
        self.int8 = quantization == "int8"
        self.packed = on_cpu and dtype == torch.bfloat16 and _mkldnn_linear_available()
        # fp32 steps of a few tokens on CPU: the skinny kernel (``skinny_linear.py``), within its window of token counts
        self.skinny = skinny_kernel() if on_cpu and dtype == torch.float32 else None
        self.skinny_tokens = skinny_window()
        # ids of a (weight, bias) and a norm -> them, with their numpy views (``linear``)
        self.skinny_arrays: dict[tuple[int, int], tuple[Any, ...]] = {}
        self.layers = [self._layer(layer) for layer in model.model.layers]
        self.embed = model.get_input_embeddings().weight.detach().to(dtype)  # [vocab, hidden]
        self.norm = model.model.norm.weight.detach().to(dtype)
        output = model.get_output_embeddings().weight
        self.lm_head = self._linear(output, None)
        # the vocabulary's rows in the model dtype, for the top logits' fp32 recomputation (``TorchRunner.logits``)
        tied = output.data_ptr() == model.get_input_embeddings().weight.data_ptr()
        self.output_rows = self.embed if tied else output.detach().to(dtype)  # [vocab, hidden]
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        rotary = model.model.rotary_emb
        inv_freq = rotary.inv_freq.detach().float().to(self.device)  # [rotary_dim / 2]
        positions = torch.arange(self.context_length, device=self.device, dtype=torch.float32)
        angles = torch.outer(positions, inv_freq)  # [context, rotary_dim / 2]
        scale = float(getattr(rotary, "attention_scaling", 1.0))
        self.cos = (torch.cat([angles.cos(), angles.cos()], dim=-1) * scale).to(dtype)  # [context, rotary_dim]
        self.sin = (torch.cat([angles.sin(), angles.sin()], dim=-1) * scale).to(dtype)
        self.rotary_dim = self.cos.shape[-1]

    @functools.cached_property
    def half_angles(self) -> tuple[np.ndarray, np.ndarray]:
        """The first half of the cos and sin tables [context, rotary_dim / 2], fp32 in host memory, as
        ``attention/cache_writes.py`` reads them (made when the fp32 CPU path first asks)."""
        half = self.rotary_dim // 2
        cos, sin = (t[:, :half].float().cpu().contiguous().numpy() for t in (self.cos, self.sin))
        return cos, sin

    def _linear(self, weight: Any, bias: Any, quantize: bool = True) -> tuple[Any, Any]:
        """(weight, bias) in the form ``linear`` takes: packed for fbgemm under int8 (unless not ``quantize``),
        or for oneDNN, else the plain tensor."""
        if self.int8 and quantize:
            return pack_int8(weight, bias), None
        weight = weight.detach().to(self.dtype).contiguous()
        bias = bias.detach().to(self.dtype) if bias is not None else None
        if self.packed:
            return self.torch.ops.mkldnn._reorder_linear_weight(weight, 1), bias
        return weight, bias

    def linear(
        self, x: Any, weight: tuple[Any, Any], norm: Any = None, gated: bool = False, residual: Any = None
    ) -> Any:
        """``x`` [tokens, in] times ``weight`` as ``_linear`` laid it out, [tokens, out]; with ``norm`` [in], ``x``
        RMS-normalised by it first; ``gated``, ``x`` [tokens, 2 * in] taken as silu(gate) * up; ``residual``
        [tokens, out] added after. Within its window of token counts the skinny kernel does all of it in one call
        (``skinny_linear.py``); elsewhere torch does it op by op."""
        torch = self.torch
        if (
            self.skinny is not None
            and self.skinny_tokens[0] <= x.shape[0] <= self.skinny_tokens[1]
            and isinstance(weight[0], torch.Tensor)
        ):
            key = (id(weight), id(norm))
            arrays = self.skinny_arrays.get(key)
            if arrays is None:  # the weight's, its bias' and the norm's numpy views, made once
                views = tuple(None if t is None else t.numpy() for t in (weight[0], weight[1], norm))
                arrays = self.skinny_arrays[key] = (weight, norm, *views)  # both held: their ids stay their own
            return skinny_linear(self.skinny, x, arrays[2], arrays[3], arrays[4], self.eps, gated, residual)
        if norm is not None:
            x = _rms_norm(torch, x, norm, self.eps)
        if gated:
            gate, up = x.chunk(2, dim=-1)
            x = torch.nn.functional.silu(gate) * up
        if isinstance(weight[0], torch.ScriptObject):  # fbgemm's packed int8 weight
            y = int8_linear(x, weight[0], self.dtype)
        elif self.packed:
            y = torch.ops.mkldnn._linear_pointwise(x, weight[0], weight[1], "none", [], "")
        else:
            y = torch.nn.functional.linear(x, weight[0], weight[1])
        return y if residual is None else residual + y

    def _layer(self, layer: Any) -> dict[str, Any]:
        torch = self.torch
        attn, mlp = layer.self_attn, layer.mlp
        if hasattr(attn, "qkv_proj"):  # Phi3: q, k and v in one projection
            qkv = self._linear(attn.qkv_proj.weight, attn.qkv_proj.bias)
        else:
            biases = [p.bias for p in (attn.q_proj, attn.k_proj, attn.v_proj)]
            bias = torch.cat(biases) if all(b is not None for b in biases) else None
            qkv = self._linear(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]), bias)
        if hasattr(mlp, "gate_up_proj"):  # Phi3: gate and up in one projection
            gate_up = self._linear(mlp.gate_up_proj.weight, None)
        else:
            gate_up = self._linear(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), None)
        return {
            "norm1": layer.input_layernorm.weight.detach().to(self.dtype),
            "qkv": qkv,
            "o": self._linear(attn.o_proj.weight, attn.o_proj.bias),
            "norm2": layer.post_attention_layernorm.weight.detach().to(self.dtype),
            "gate_up": gate_up,
            "down": self._linear(mlp.down_proj.weight, None, quantize=False),
        }


def release_model_weights(model: Any) -> None:
    """Free a loaded model's decoder layers and output projection once ``LlamaWeights`` holds its own layout of them
    (fused projections, packed or quantized copies): their parameters become empty, so the weights are in memory once.
    The input embeddings stay (the runner shares them). The model can no longer run its own forward."""
    import torch

    tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    modules = [*model.model.layers, model.model.norm] + ([] if tied else [model.get_output_embeddings()])
    for module in modules:
        for child in module.modules():
            for name, parameter in list(child.named_parameters(recurse=False)):
                empty = torch.empty(0, dtype=parameter.dtype, device=parameter.device)
                setattr(child, name, torch.nn.Parameter(empty, requires_grad=False))
    if next(model.parameters()).device.type == "cuda":
        torch.cuda.empty_cache()


def _mkldnn_linear_available() -> bool:
    import torch

    try:
        weight = torch.ops.mkldnn._reorder_linear_weight(torch.zeros(8, 8, dtype=torch.bfloat16), 1)
        torch.ops.mkldnn._linear_pointwise(torch.zeros(1, 8, dtype=torch.bfloat16), weight, None, "none", [], "")
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


#: numpy dtypes by item size: a CPU cache of any torch dtype is a view of a mapped numpy buffer of the same size
_SAME_SIZE_NUMPY = {2: np.int16, 4: np.float32}


class TorchRunner:
    """A ``ModelRunner`` over ``LlamaWeights``: the KV pools (per layer, keys and values [blocks, kv_heads,
    block_size, head_dim] in torch tensors on the model's device, in the model dtype), and the forward passes over
    them, each sequence's positions found through its block table."""

    paged = True

    def __init__(self, weights: LlamaWeights, fused_decode: bool = True, cuda_graphs: bool = True):
        self.w = weights
        self.cuda_graphs = cuda_graphs
        self.graphs: Any = None  # DecodeGraphs, on a GPU with the Triton kernel
        self.torch = weights.torch
        self.vocab_size = weights.vocab_size
        self.context_length = weights.context_length
        self.fused_decode = fused_decode
        self.keys: list[Any] = []
        self.values: list[Any] = []
        self.buffers: list[np.ndarray] = []  # on CPU, the pools' mapped memory (``forget`` hands pages back)
        self.block_size = 0
        self.kv_head_index = np.arange(weights.kv_heads, dtype=np.int64)[None, :]  # [1, kv_heads]
        self.decode_kernel: Any = None
        self.gpu_kernel: Any = None
        self.writer: Any = None  # the fp32 CPU path's rotary embedding and cache writes in one kernel (``_write``)
        self.pool_arrays: list[tuple[np.ndarray, np.ndarray]] = []  # on CPU: each layer's pools as kernels read them
        self.prompts_in_kernel = False
        # prompt chunks behind one cached prefix attended together (``attention/shared_prefix.py``): on a CPU
        self.shared_prefixes = weights.device.type == "cpu" and flash_with_lse(weights.torch) is not None

    def block_bytes(self, block_size: int) -> int:
        w = self.w
        return 2 * len(w.layers) * w.kv_heads * block_size * w.head_dim * w.dtype.itemsize

    def device_kv_budget(self, prompt_tokens: int, rows: int, utilization: float) -> Optional[int]:
        """On a GPU, the bytes the KV cache may take, as vLLM sizes it: ``utilization`` of the device's memory, less
        what is in use after the largest step ran once (the weights, the CUDA context, the libraries' workspaces) and
        that step's peak of working memory, measured (``step_peak_bytes``). None on a CPU, whose budget is the
        scheduler's default."""
        w, torch = self.w, self.torch
        if w.device.type != "cuda":
            return None
        peak = self.step_peak_bytes(min(prompt_tokens, self.context_length - 1), rows)
        free, total = torch.cuda.mem_get_info(w.device)
        return max(0, int(total * utilization) - (total - free) - peak)

    def step_peak_bytes(self, prompt_tokens: int, rows: int) -> int:
        """The device memory the largest step takes at its peak beyond the weights and its KV blocks, measured by
        torch's allocator from a reset peak over one ``probe_step``."""
        w, torch = self.w, self.torch
        held: list[int] = []

        def measure_from_here() -> None:
            torch.cuda.synchronize(w.device)
            torch.cuda.reset_peak_memory_stats(w.device)
            held.append(torch.cuda.memory_allocated(w.device))  # the weights and the probe's pools

        self.probe_step(prompt_tokens, rows, measure_from_here)
        torch.cuda.synchronize(w.device)
        peak = int(torch.cuda.max_memory_allocated(w.device) - held[0])
        torch.cuda.empty_cache()
        return peak

    def probe_step(
        self, prompt_tokens: int, rows: int, before: Optional[Callable[[], None]] = None, block_size: int = 32
    ) -> None:
        """The largest step, once, before the KV cache exists: a prompt chunk of ``prompt_tokens`` tokens and
        ``rows`` decoding rows (each at position 0 of a block of its own), eager (no CUDA graph), into pools just
        large enough, which are dropped after; ``before`` is called once the pools are made."""
        chunk_blocks = list(range(-(-(prompt_tokens + 1) // block_size)))
        row_blocks = [[len(chunk_blocks) + i] for i in range(rows)]
        chunk = Chunk(0, [0] * prompt_tokens, 0, chunk_blocks)
        graphs, self.cuda_graphs = self.cuda_graphs, False
        try:
            self.allocate(len(chunk_blocks) + rows, block_size, rows + 1)
            if before is not None:
                before()
            self.forward(StepBatch(list(range(1, rows + 1)), [0] * rows, [0] * rows, row_blocks, [chunk]))
        finally:
            self.cuda_graphs = graphs
            self.keys, self.values, self.buffers, self.pool_arrays, self.graphs = [], [], [], [], None
            self.block_size = 0

    def allocate(self, num_blocks: int, block_size: int, max_seqs: int) -> None:
        """The pools, and on a GPU one block more: the scratch block padding rows of a CUDA graph write to."""
        w, torch = self.w, self.torch
        on_gpu = w.device.type == "cuda"
        total = num_blocks + 1 if on_gpu else num_blocks
        if self.keys and self.keys[0].shape[0] == total and self.block_size == block_size:
            return
        shape = (total, w.kv_heads, block_size, w.head_dim)
        same_size = _SAME_SIZE_NUMPY.get(w.dtype.itemsize)
        self.keys, self.values, self.buffers = [], [], []
        for pools in (self.keys, self.values):
            for _ in w.layers:
                if w.device.type == "cpu" and same_size is not None:  # committed as it is written
                    buffer = zeroed_array(shape, same_size)
                    self.buffers.append(buffer)
                    pools.append(torch.from_numpy(buffer).view(w.dtype))
                else:
                    pools.append(torch.zeros(shape, dtype=w.dtype, device=w.device))
        self.block_size = block_size
        group = w.heads // w.kv_heads
        # attention in one kernel over the pools: numba's on a CPU, Triton's on a GPU (None: torch's, through
        # ``paged_torch.py``); prompt chunks too on the GPU kernel and on the CPU kernel's bf16-instruction path.
        # There torch's flash attention is faster from about 16 prompt tokens (benchmarks/chunk_attention.py) but
        # rounds its bf16 probabilities before the values, which turns some greedy answers (5 of the 8 fidelity
        # prompts, results/greedy-ab-prompts-on-sdpa.json); the kernel keeps them in fp32. Chunks behind a shared
        # cached prefix, where reading the prefix once matters more, go to torch (``shared_prefix.py``).
        self.decode_kernel, self.gpu_kernel = None, None
        if self.fused_decode and w.device.type == "cuda":
            self.gpu_kernel = paged_attention(w.head_dim, group, block_size)
        elif self.fused_decode:
            self.decode_kernel = decode_kernel(w.head_dim, group, w.dtype, w.device, block_size)
        self.prompts_in_kernel = self.gpu_kernel is not None or (
            self.decode_kernel is not None and on_bf16_instructions(w.head_dim, w.dtype)
        )
        # in fp32 on a CPU a layer's queries and keys are turned, and its keys and values written, by one numba kernel
        # in place of a dozen torch operations (``attention/cache_writes.py``); bf16 keeps torch's, whose roundings
        # the greedy answers were checked against
        self.writer, self.pool_arrays = None, []
        if self.decode_kernel is not None:
            self.pool_arrays = [(_numpy_view(torch, k), _numpy_view(torch, v)) for k, v in zip(self.keys, self.values)]
            if w.dtype == torch.float32:
                self.writer = cache_writer(w.head_dim, w.heads, w.kv_heads, w.rotary_dim, False)
        self.graphs = None
        if on_gpu and self.gpu_kernel is not None and self.cuda_graphs:
            widest = -(-self.context_length // block_size)
            self.graphs = DecodeGraphs(self, min(max_seqs, max(SIZES)), widest, scratch=num_blocks)

    def free(self, seq_id: int) -> None:
        pass

    def forget(self, blocks: list[int]) -> None:
        runs = block_runs(blocks)
        for buffer in self.buffers:
            release_blocks(buffer, runs)

    # ------------------------------------------------------------------ the forward pass
    def forward(self, batch: StepBatch) -> Any:
        """One step: the decode rows and every prompt chunk go through the linear layers together (the weights are
        read once a step, whatever the mix); attention runs in the kernel for the decode rows and, where it takes
        them, the prompt chunks, else in torch (``paged_torch.py``) over each part's blocks. On a CPU, chunks behind
        one cached prefix are attended together in torch (``shared_prefix.py``): they are placed last in the step,
        after the tokens the kernel takes, and their logits put back in the batch's order."""
        torch, w = self.torch, self.w
        size = self.block_size
        rows = len(batch.decode_tokens)
        for source, target, count in batch.copies:
            for pool in self.keys + self.values:
                pool[target, :, :count] = pool[source, :, :count]
        if self.graphs is not None and self.graphs.applies(batch):
            logits = self.graphs.run(batch, size)
            if logits is not None:
                return logits
        groups: list[tuple[int, list[int]]] = []  # (shared blocks, indices into batch.chunks)
        if self.shared_prefixes and len(batch.chunks) > 1:
            groups = shared_prefix_groups([c.blocks for c in batch.chunks], [c.start for c in batch.chunks], size)
        grouped = [i for _, members in groups for i in members]
        in_groups = set(grouped)
        order = [i for i in range(len(batch.chunks)) if i not in in_groups] + grouped  # the chunks' step order
        chunks = [batch.chunks[i] for i in order]
        spans = []  # (index among the step's sequences, start, end, offset of the chunk's tokens in the step)
        offset = rows
        for i, chunk in enumerate(chunks):
            count = len(chunk.token_ids)
            spans.append((rows + i, chunk.start, chunk.start + count, offset))
            offset += count
        tables_list = batch.decode_blocks + [c.blocks for c in chunks]  # one per sequence of the step
        widest = max(len(t) for t in tables_list)
        tables = np.zeros((len(tables_list), widest), np.int64)  # [sequences, blocks]
        for i, table in enumerate(tables_list):
            tables[i, : len(table)] = table
        step_ids = batch.decode_tokens + [t for c in chunks for t in c.token_ids]
        positions = np.asarray(
            batch.decode_positions + [p for c in chunks for p in range(c.start, c.start + len(c.token_ids))], np.int64
        )  # [step tokens]
        step_seqs = np.concatenate(
            [np.arange(rows, dtype=np.int64), *(np.full(stop - start, s, np.int64) for s, start, stop, _ in spans)]
        )  # [step tokens]: each token's sequence
        slot_blocks = tables[step_seqs, positions // size]  # [step tokens]: the block each token's KV goes to
        padding = padded_step_tokens(len(step_ids)) - len(step_ids)
        with torch.inference_mode():
            ids = torch.tensor(step_ids + [0] * padding, device=w.device)  # [padded step tokens]
            # where each token's key and value go: for the fp32 CPU kernel (blocks, offsets, positions [step tokens]),
            # else for torch, with the rotary tables' rows
            writes = (slot_blocks, positions % size, positions) if self.writer is not None else None
            if writes is None:
                padded = np.concatenate([positions, np.zeros(padding, np.int64)]) if padding else positions
                where = torch.from_numpy(padded).to(w.device)  # [padded step tokens]
                cos, sin = w.cos[where][:, None, :], w.sin[where][:, None, :]  # [padded step tokens, 1, rotary_dim]
                # each token's key row of each kv head in the pools viewed as [blocks * kv_heads * block_size, head_dim]
                slots = (slot_blocks[:, None] * w.kv_heads + self.kv_head_index) * size + (positions % size)[:, None]
                into = torch.from_numpy(slots.ravel()).to(w.device)  # [step tokens * kv_heads]
            filler = (
                torch.zeros(padding, w.heads * w.head_dim, dtype=w.dtype, device=w.device) if padding else None
            )  # [padding, heads * head_dim]: the padding rows' attention output
            # step tokens the kernel attends (the first ones): every one on a GPU; on a CPU the decode rows and, where
            # it takes prompts, the chunks not attended together
            in_kernel = rows
            if self.gpu_kernel is not None:
                in_kernel = offset
            elif self.prompts_in_kernel:
                in_kernel = spans[len(chunks) - len(grouped)][3] if grouped else offset
            kernel = self.decode_kernel if in_kernel else None
            gpu_kernel = self.gpu_kernel if in_kernel else None
            torch_spans = [span for span in spans if span[3] >= in_kernel]  # the chunks torch attends
            at_span = {order[span[0] - rows]: k for k, span in enumerate(torch_spans)}  # batch chunk -> torch_spans
            together = [(shared, [at_span[i] for i in members]) for shared, members in groups]
            grouped_spans = {at_span[i] for i in in_groups}
            alone = [k for k in range(len(torch_spans)) if k not in grouped_spans]  # attended each by itself
            on_torch = torch_spans or (rows and kernel is None and gpu_kernel is None) or gpu_kernel is not None
            device_tables: Any = torch.from_numpy(tables).to(w.device) if on_torch else None  # [sequences, blocks]
            kernel_seqs = step_seqs[:in_kernel]  # [in_kernel]: each query's sequence
            lengths = positions[:in_kernel] + 1  # [in_kernel]: cached positions it attends
            if w.device.type == "cpu":
                set_kernel_threads(torch.get_num_threads())  # the attention and skinny linear kernels' threads
            if kernel is not None:
                attended_rows = np.empty((in_kernel, w.heads, w.head_dim), np.float32)  # the kernel's output
            if gpu_kernel is not None:  # the same, as int32 device tensors (copied, no sync)
                gpu_tables = device_tables.int()
                gpu_seqs = torch.from_numpy(kernel_seqs).to(w.device, non_blocking=True).int()
                gpu_lengths = torch.from_numpy(lengths).to(w.device, non_blocking=True).int()
            group = w.heads // w.kv_heads  # query heads per kv head (heads h*group .. h*group+group-1 read kv head h)
            written = len(step_ids)
            x = w.embed[ids]  # [step tokens, hidden]
            for i, layer in enumerate(w.layers):
                keys, values = self.keys[i], self.values[i]
                if writes is not None:  # turned and written in one kernel
                    q = self._write(x, layer, i, writes)  # [step tokens, heads, head_dim]
                else:
                    q, k, v = self._qkv(x, layer, cos, sin)  # [step tokens, heads | kv_heads, head_dim]
                    keys.view(-1, w.head_dim).index_copy_(0, into, k[:written].reshape(-1, w.head_dim))
                    values.view(-1, w.head_dim).index_copy_(0, into, v[:written].reshape(-1, w.head_dim))
                parts = []
                if kernel is not None:
                    queries = q[:in_kernel].contiguous().view(in_kernel, w.kv_heads, group, w.head_dim)
                    kernel(
                        _numpy_view(torch, queries),
                        kernel_seqs,
                        tables,
                        *self.pool_arrays[i],
                        lengths,
                        w.head_dim**-0.5,
                        attended_rows,
                    )  # attended_rows [in_kernel, heads, head_dim]
                    parts.append(torch.from_numpy(attended_rows).view(in_kernel, -1).to(w.dtype))
                elif gpu_kernel is not None:
                    queries = q[:in_kernel].contiguous().view(in_kernel, w.kv_heads, group, w.head_dim)
                    attended = gpu_kernel(
                        queries, gpu_seqs, gpu_tables, keys, values, gpu_lengths, w.head_dim**-0.5
                    )  # [in_kernel, heads, head_dim] fp32
                    parts.append(attended.view(in_kernel, -1).to(w.dtype))
                elif rows:
                    attended = decode_attention(
                        torch, q[:rows], device_tables[:rows], keys, values, [p + 1 for p in batch.decode_positions]
                    )  # [rows, heads, head_dim]
                    parts.append(attended.reshape(rows, -1))
                chunk_parts: dict[int, Any] = {}  # index in torch_spans -> [count, heads, head_dim]
                for shared, members in together:
                    try:
                        attended_chunks = shared_prefix_attention(
                            torch,
                            [
                                q[torch_spans[m][3] : torch_spans[m][3] + torch_spans[m][2] - torch_spans[m][1]]
                                for m in members
                            ],
                            [device_tables[torch_spans[m][0]] for m in members],
                            keys,
                            values,
                            [torch_spans[m][1] for m in members],
                            shared,
                            w.head_dim**-0.5,
                        )
                    except (RuntimeError, TypeError) as exc:  # torch's private flash op refused: attend each alone
                        log.warning("shared-prefix attention failed (%s); prompt chunks are attended alone", exc)
                        self.shared_prefixes = False
                        together, alone = [], list(range(len(torch_spans)))
                        break
                    chunk_parts.update(zip(members, attended_chunks))
                for m in alone:
                    seq, start, stop, at = torch_spans[m]
                    chunk_parts[m] = chunk_attention(
                        torch, q[at : at + stop - start], device_tables[seq], keys, values, start
                    )
                for m, (_, start, stop, _) in enumerate(torch_spans):
                    parts.append(chunk_parts[m].reshape(stop - start, -1))  # [count, heads * head_dim]
                if filler is not None:
                    parts.append(filler)
                x = self._rest_of_layer(x, parts[0] if len(parts) == 1 else torch.cat(parts), layer)
            chunk_last = [at + stop - start - 1 for _, start, stop, at in spans]  # in step order
            in_batch_order = [0] * len(order)
            for position, i in enumerate(order):
                in_batch_order[i] = chunk_last[position]
            last = list(range(rows)) + in_batch_order
            return self.logits(_rms_norm(torch, x[last], w.norm, w.eps))  # [rows + chunks, vocab]

    def device_decode(
        self, ids: Any, where: Any, into_block: Any, into_offset: Any, seqs: Any, tables: Any, lengths: Any
    ) -> Any:
        """A decode step from device tensors alone (what a CUDA graph records): ``ids``, ``where``, ``into_block``,
        ``into_offset`` [rows] long, ``seqs`` [rows] and ``tables`` [rows, blocks] and ``lengths`` [rows] int32, every
        row's attention in the GPU kernel. Returns logits [rows, vocab]."""
        torch, w = self.torch, self.w
        rows = ids.shape[0]
        group = w.heads // w.kv_heads
        with torch.inference_mode():
            x = w.embed[ids]  # [rows, hidden]
            cos, sin = w.cos[where][:, None, :], w.sin[where][:, None, :]  # [rows, 1, rotary_dim]
            for i, layer in enumerate(w.layers):
                q, k, v = self._qkv(x, layer, cos, sin)  # [rows, heads | kv_heads, head_dim]
                keys, values = self.keys[i], self.values[i]
                keys[into_block, :, into_offset] = k
                values[into_block, :, into_offset] = v
                queries = q.contiguous().view(rows, w.kv_heads, group, w.head_dim)
                attended = self.gpu_kernel(queries, seqs, tables, keys, values, lengths, w.head_dim**-0.5)
                x = self._rest_of_layer(x, attended.view(rows, -1).to(w.dtype), layer)
            return self.logits(_rms_norm(torch, x, w.norm, w.eps))  # [rows, vocab]

    def logits(self, hidden: Any) -> Any:
        """fp32 logits [tokens, vocab] of the final hidden states [tokens, hidden]: the vocabulary projection in
        the model dtype, then the ``EXACT_TOP`` highest recomputed in fp32 from the same hidden states. Near 25,
        bf16 logits lie an eighth apart, so their rounding alone would decide close calls between the top tokens
        (a greedy answer's first word, say); the recomputation costs a few dot products."""
        torch, w = self.torch, self.w
        logits = w.linear(hidden, w.lm_head).float()  # [tokens, vocab]
        if w.dtype == torch.float32 and not w.int8:
            return logits
        top = top_indices(torch, logits, min(EXACT_TOP, logits.shape[-1]))  # [tokens, EXACT_TOP]
        exact = torch.einsum("th,tkh->tk", hidden.float(), w.output_rows[top].float())  # [tokens, EXACT_TOP]
        return logits.scatter_(1, top, exact)

    def _qkv(self, x: Any, layer: dict[str, Any], cos: Any, sin: Any) -> tuple[Any, Any, Any]:
        """Queries and keys (rotated) and values of one layer, in the cache dtype."""
        w = self.w
        tokens = x.shape[0]
        qkv = w.linear(x, layer["qkv"], norm=layer["norm1"])
        split = (w.heads + w.kv_heads) * w.head_dim
        qk = _rotate(self.torch, qkv[:, :split].view(tokens, w.heads + w.kv_heads, w.head_dim), cos, sin, w.rotary_dim)
        return qk[:, : w.heads], qk[:, w.heads :], qkv[:, split:].view(tokens, w.kv_heads, w.head_dim)

    def _write(self, x: Any, layer: dict[str, Any], i: int, writes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Any:
        """The fp32 CPU path of ``_qkv`` and the cache writes: layer ``i``'s projections of the step's tokens, their
        keys turned and written with their values into the pools at ``writes`` (blocks, offsets, positions [step
        tokens]), and their queries turned, returned [step tokens, heads, head_dim]."""
        w, torch = self.w, self.torch
        blocks, offsets, positions = writes
        count = len(positions)
        qkv = w.linear(x, layer["qkv"], norm=layer["norm1"])  # [padded step tokens, ...]
        queries = np.empty((count, w.heads, w.head_dim), np.float32)
        cos, sin = w.half_angles
        self.writer(qkv.numpy()[:count], blocks, offsets, positions, cos, sin, *self.pool_arrays[i], queries)
        return torch.from_numpy(queries)

    def _rest_of_layer(self, x: Any, attended: Any, layer: dict[str, Any]) -> Any:
        """Output projection and residual, then the gated MLP and residual."""
        w = self.w
        x = w.linear(attended, layer["o"], residual=x)
        return w.linear(w.linear(x, layer["gate_up"], norm=layer["norm2"]), layer["down"], gated=True, residual=x)

    # ------------------------------------------------------------------ sampling
    def generator(self, seed: int) -> Any:
        return self.torch.Generator(device=self.w.device).manual_seed(seed % 2**64)

    def sample(self, logits: Any, rows: list[RowSampling]) -> list[TokenChoice]:
        return sample_next(logits, rows)


def padded_step_tokens(count: int) -> int:
    """The token count a step of ``count`` tokens runs its linear layers at. oneDNN builds (and keeps) a
    kernel for each distinct shape it sees, so a server whose steps carried every count from 1 to the
    prefill budget would hold hundreds of them; counts past ``EXACT_STEP_TOKENS`` round up to a multiple of
    ``STEP_BUCKET`` (padding rows whose outputs are never read)."""
    if count <= EXACT_STEP_TOKENS:
        return count
    return -(-count // STEP_BUCKET) * STEP_BUCKET


def top_indices(torch: Any, scores: Any, k: int, block: int = 128) -> Any:
    """The indices [rows, k] of each row's ``k`` highest ``scores`` [rows, n], in no order: the best ``k``
    blocks of ``block`` by their maximum hold them, so only those are searched (``torch.topk`` over a whole
    vocabulary row is a slow scalar loop on CPU; block maxima vectorize)."""
    rows, count = scores.shape
    pad = (-count) % block
    padded = torch.nn.functional.pad(scores, (0, pad), value=float("-inf")) if pad else scores
    blocks = padded.view(rows, -1, block)  # [rows, blocks, block]
    best = blocks.amax(-1).topk(min(k, blocks.shape[1]), dim=-1).indices  # [rows, k]: blocks holding the top k
    within = blocks.gather(1, best[..., None].expand(-1, -1, block)).reshape(rows, -1)  # [rows, k * block]
    pick = within.topk(k, dim=-1).indices  # [rows, k]: places in the gathered blocks
    return best.gather(1, pick // block) * block + pick % block


def _numpy_view(torch: Any, cache: Any) -> np.ndarray:
    """A CPU cache buffer as the numpy array the decode kernel reads (bf16 as its uint16 bits), no copy."""
    if cache.dtype == torch.bfloat16:
        return cache.view(torch.int16).numpy().view(np.uint16)
    return cache.numpy()


def _rms_norm(torch: Any, x: Any, weight: Any, eps: float) -> Any:
    return torch.nn.functional.rms_norm(x, (x.shape[-1],), weight, eps)


def _rotate(torch: Any, x: Any, cos: Any, sin: Any, rotary_dim: int) -> Any:
    """Rotary position embedding (the half-split convention of Hugging Face checkpoints) on the first
    ``rotary_dim`` features of each head of ``x`` [tokens, heads, head_dim]."""
    if rotary_dim < x.shape[-1]:
        return torch.cat([_rotate(torch, x[..., :rotary_dim], cos, sin, rotary_dim), x[..., rotary_dim:]], dim=-1)
    half = rotary_dim // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin
