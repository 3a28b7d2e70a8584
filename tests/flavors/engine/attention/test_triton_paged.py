"""The Triton paged-attention kernel under Triton's interpreter (``TRITON_INTERPRET=1``, on this CPU) against the
torch reference (``paged_torch.py``): decode rows of different lengths and a prompt chunk's queries, in one launch,
through shuffled block tables."""

import os
import sys

import pytest

torch = pytest.importorskip("torch")
# Triton decorates its own library functions when it is first imported, in the mode this variable says then
INTERPRETED_FROM_THE_START = "triton" not in sys.modules or os.environ.get("TRITON_INTERPRET") == "1"
os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton", reason="Triton is not installed here (pip install triton)")

from servelm.flavors.engine.attention import paged_torch, triton_paged  # noqa: E402


@pytest.fixture
def interpreted(monkeypatch):
    if not INTERPRETED_FROM_THE_START:
        pytest.skip("Triton was imported before this module could ask for its interpreter")
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(
    ("kv_heads", "group", "head_dim", "block_size"), [(3, 3, 64, 32), (2, 1, 32, 16), (1, 4, 80, 16)]
)
def test_the_kernel_computes_what_the_torch_reference_does(interpreted, dtype, kv_heads, group, head_dim, block_size):
    generator = torch.Generator().manual_seed(0)
    seqs, longest = 3, 70
    per_seq = -(-longest // block_size)
    total = seqs * per_seq + 2
    tables = torch.randperm(total, generator=generator)[: seqs * per_seq].view(seqs, per_seq)
    keys = torch.randn(total, kv_heads, block_size, head_dim, generator=generator).to(dtype)
    values = torch.randn(total, kv_heads, block_size, head_dim, generator=generator).to(dtype)
    # two decode rows, then a prompt chunk of the third sequence at positions 40 .. 49
    query_seqs = torch.tensor([0, 1] + [2] * 10)
    lengths = torch.tensor([1, 70] + list(range(41, 51)))
    queries = (torch.randn(len(query_seqs), kv_heads, group, head_dim, generator=generator) * 2).to(dtype)
    attend = triton_paged.paged_attention(head_dim, group, block_size)
    assert attend is not None
    got = attend(
        queries, query_seqs.int(), tables.int(), keys, values, lengths.int(), head_dim**-0.5
    )  # [n, heads, head_dim]
    heads = kv_heads * group
    flat = queries.view(-1, heads, head_dim).float()
    expected = torch.cat(
        [
            paged_torch.decode_attention(torch, flat[:2], tables[:2], keys.float(), values.float(), [1, 70]),
            paged_torch.chunk_attention(torch, flat[2:], tables[2], keys.float(), values.float(), 40),
        ]
    )
    tolerance = 1e-4 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(got, expected, atol=tolerance, rtol=tolerance)


def test_no_launcher_without_triton(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))
    assert triton_paged.paged_attention(64, 3, 32) is None
