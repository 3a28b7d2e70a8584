"""A kernel's first process on a machine (which finds numba's cache empty) computes the same bits as every later one
(which loads it): ``numba_cache.py``."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("numba")
pytest.importorskip("torch")

SCRIPT = """
import hashlib, sys
import numpy as np, torch
from servelm.flavors.engine.attention.cpu_kernel import decode_kernel
kernel = decode_kernel(32, 2, torch.float32, torch.device("cpu"), 16)
rng = np.random.default_rng(0)
rows, n, kv_heads, blocks = 3, 70, 2, 5
keys = rng.standard_normal((rows * blocks, kv_heads, 16, 32)).astype(np.float32)
values = rng.standard_normal((rows * blocks, kv_heads, 16, 32)).astype(np.float32)
queries = rng.standard_normal((rows, kv_heads, 2, 32)).astype(np.float32)
tables = np.arange(rows * blocks, dtype=np.int64).reshape(rows, blocks)
out = np.empty((rows, 4, 32), np.float32)
kernel(queries, np.arange(rows, dtype=np.int64), tables, keys, values, np.full(rows, n, np.int64), 0.2, out)
print(hashlib.sha256(out.tobytes()).hexdigest())
"""


def run(cache_dir) -> str:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_the_compiling_process_runs_the_cached_code(tmp_path):
    first = run(tmp_path)  # an empty cache: filled by a child, then loaded
    assert list(tmp_path.rglob("*.nbi"))
    assert run(tmp_path) == first  # loaded
