#!/usr/bin/env bash
# Download, into .whl/ (ignored by git), the wheels scripts/test-gpu.sh installs on a GPU machine without a package
# index: what servelm needs beyond the torch, transformers, triton, numpy and friends those machines hold (see
# ../shared/NOTES.md), for their Python (3.12) on x86-64 Linux. Carry .whl with the checkout (under 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
version=${GPU_PYTHON_VERSION:-3.12}
rm -rf .whl && mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl \
    fastapi starlette 'pydantic>=2.6' pydantic-core annotated-types typing-inspection uvicorn sse-starlette \
    openai distro jiter sniffio pytest-asyncio llguidance gguf python-multipart
# pydantic pins the one pydantic-core it was built against: fetch that one
core=$(unzip -p .whl/pydantic-[0-9]*.whl '*/METADATA' | sed -n 's/^Requires-Dist: pydantic-core==\([0-9.]*\).*/\1/p')
rm -f .whl/pydantic_core-*.whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    "pydantic-core==$core"
du -sh .whl
