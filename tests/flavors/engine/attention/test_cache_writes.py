"""The cut decoder's rotary embedding and cache writes (``cache_writes.py``) against a plain reference."""

import numpy as np
import pytest

pytest.importorskip("numba")
torch = pytest.importorskip("torch")

from servelm.flavors.engine.attention.cache_writes import cache_writer  # noqa: E402


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """x rounded to bf16 (torch's rounding: nearest, ties to even), as its uint16 bits."""
    return torch.from_numpy(np.ascontiguousarray(x)).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def turned(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, rotary: int) -> np.ndarray:
    """The half-split rotary embedding of x [..., head_dim] by angles [rotary / 2] (the first ``rotary``
    features turn, the rest stay)."""
    half = rotary // 2
    out = x.copy()
    a, b = x[..., :half], x[..., half:rotary]
    out[..., :half] = a * cos - b * sin
    out[..., half:rotary] = b * cos + a * sin
    return out


@pytest.mark.parametrize("bf16", [True, False])
@pytest.mark.parametrize("rotary", [32, 16])
def test_queries_keys_and_values_land_rotated_in_their_slots(bf16, rotary):
    heads, kv_heads, head_dim, context = 4, 2, 32, 40
    rng = np.random.default_rng(0)
    tokens = 5
    qkv = rng.standard_normal((tokens, (heads + 2 * kv_heads) * head_dim)).astype(np.float32)
    angles = rng.uniform(0, 6, (context, rotary // 2)).astype(np.float32)
    cos, sin = np.cos(angles), np.sin(angles)
    size = 8  # positions per block
    blocks = np.array([5, 0, 0, 3, 1], np.int64)  # the block each token's key and value go to
    positions = np.array([7, 3, 4, 0, 39], np.int64)
    offsets = positions % size
    dtype = np.uint16 if bf16 else np.float32
    keys = np.zeros((6, kv_heads, size, head_dim), dtype)
    values = np.zeros_like(keys)
    queries = np.zeros((tokens, heads, head_dim), dtype)
    write = cache_writer(head_dim, heads, kv_heads, rotary, bf16)
    write(qkv, blocks, offsets, positions, cos, sin, keys, values, queries)
    split = qkv.reshape(tokens, heads + 2 * kv_heads, head_dim)
    stored = bf16_bits if bf16 else (lambda x: x)
    for t in range(tokens):
        angle_cos, angle_sin = cos[positions[t]], sin[positions[t]]
        want_q = turned(split[t, :heads], angle_cos, angle_sin, rotary)
        want_k = turned(split[t, heads : heads + kv_heads], angle_cos, angle_sin, rotary)
        row, at = blocks[t], offsets[t]
        if bf16:
            np.testing.assert_array_equal(queries[t], bf16_bits(want_q))
            np.testing.assert_array_equal(keys[row, :, at], bf16_bits(want_k))
            np.testing.assert_array_equal(values[row, :, at], bf16_bits(split[t, heads + kv_heads :]))
        else:
            np.testing.assert_allclose(queries[t], want_q, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(keys[row, :, at], want_k, rtol=1e-6, atol=1e-6)
            np.testing.assert_array_equal(values[row, :, at], stored(split[t, heads + kv_heads :]))
    written = {(int(b), int(o)) for b, o in zip(blocks, offsets)}
    untouched = [(b, o) for b in range(6) for o in range(size) if (b, o) not in written]
    assert all(not keys[r, :, p].any() and not values[r, :, p].any() for r, p in untouched)
