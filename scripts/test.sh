#!/usr/bin/env bash
# The whole test suite on a fresh clone: the main venv (.venv, every extra the tests use) with the linter and the
# type checker first, then the vLLM engine's tests in a venv of their own (scripts/test-vllm.sh), then the Ray Serve
# and Spark tests in theirs (scripts/test-scale.sh). Exits non-zero if any fails.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --progress-bar off -e '.[test]'
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest -q
bash scripts/test-vllm.sh
bash scripts/test-scale.sh
