"""One switch turns the CPU's features off for every path that reads them (``SERVELM_CPU_FEATURES_OFF``)."""

import pytest

from servelm.flavors.engine import cpu_features


@pytest.fixture
def flags(monkeypatch):
    """This CPU has AVX-512 with bf16 and VNNI, and AVX-VNNI."""
    monkeypatch.setattr(
        cpu_features, "_cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni"})
    )
    monkeypatch.delenv(cpu_features.OFF_VARIABLE, raising=False)


@pytest.mark.parametrize(
    "off, on",
    [
        ("", {"avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni"}),
        ("avx512", {"avx_vnni"}),
        ("avx512,avx_vnni", set()),
        ("AVX512_BF16", {"avx512f", "avx512_vnni", "avx_vnni"}),
        ("all", set()),
    ],
)
def test_the_switch_turns_features_off(flags, monkeypatch, off, on):
    monkeypatch.setenv(cpu_features.OFF_VARIABLE, off)
    assert {f for f in cpu_features.FEATURES if cpu_features.cpu_has(f)} == on
    assert not cpu_features.cpu_has("amx_bf16")  # absent stays absent


def test_why_not_tells_a_switch_from_an_absent_feature(flags, monkeypatch):
    monkeypatch.setenv(cpu_features.OFF_VARIABLE, "avx512_bf16")
    assert cpu_features.why_not("avx512_bf16") == "avx512_bf16 is switched off (SERVELM_CPU_FEATURES_OFF)"
    assert cpu_features.why_not("amx_bf16") == "this CPU has no amx_bf16"
    assert cpu_features.switched_off() == ["avx512_bf16"]
    assert "avx512_bf16 off" in cpu_features.describe() and "amx_bf16 absent" in cpu_features.describe()


def test_the_kernels_and_dtype_follow_the_switch():
    """In a process started with the switch, the bf16 kernel path and the bf16 CPU dtype are off."""
    import os
    import subprocess
    import sys

    pytest.importorskip("torch")
    code = (
        "from servelm.flavors.engine.attention.bf16_intrinsics import has_bf16_dot;"
        "from servelm.flavors.transformers.device import cpu_has_native_bf16;"
        "print(has_bf16_dot(), cpu_has_native_bf16())"
    )
    env = {**os.environ, cpu_features.OFF_VARIABLE: "all"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.stdout.split() == ["False", "False"], out.stderr
