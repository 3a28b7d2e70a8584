#!/usr/bin/env bash
# The whole test suite on a fresh clone: the main venv (.venv, every extra the tests use), then the vLLM
# engine's tests in a venv of their own (scripts/test-vllm.sh). Exits non-zero if either fails.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --progress-bar off -e '.[test]'
.venv/bin/python -m pytest -q
bash scripts/test-vllm.sh
