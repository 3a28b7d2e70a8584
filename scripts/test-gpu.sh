#!/usr/bin/env bash
# servelm's check on a CUDA machine, in one call, in under 8 minutes, with no network:
#   1. the own engine's GPU tests (tests/flavors/engine/test_gpu.py), the engine contract suite and the real-model
#      tests, every transformers engine on the GPU (a server picks cuda where there is one);
#   2. a short side-by-side of the transformers engine on the GPU: the tiny model and SmolLM2 (or, where SmolLM2's
#      98 MB file is not there, a model of its layers' shape with random weights) at 1, 16 and 64 clients;
#   3. the batch-1 decode step against the memory roofline (benchmarks/gpu_roofline.py).
# It writes one JSON, benchmarks/results/gpu-check.json (and a copy under $OUT where that is set), and exits
# non-zero when a part failed. Without a CUDA device it refuses (exit 2) before doing anything.
#
# Dependencies: the machine's python must hold torch (CUDA), transformers, triton and numpy. What servelm needs
# beyond those comes from wheels in .whl/ (scripts/gpu-wheels.sh downloads them on a machine with a package index;
# carry .whl with the checkout), installed into a folder of its own; servelm itself is read from this checkout.
# SERVELM_GPU_CHECK_REHEARSAL=1 runs the same steps on a machine without a GPU, to try the script itself (its JSON
# then says "rehearsal": true; its figures are no GPU's).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
python=${PYTHON:-python3}
started=$SECONDS

rehearsal=${SERVELM_GPU_CHECK_REHEARSAL:-0}
if [ "$rehearsal" != 1 ] && ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "refused: no CUDA device here (torch.cuda.is_available() is False, or no torch): run this on a GPU machine" >&2
    exit 2
fi

site=${SERVELM_GPU_SITE:-/tmp/servelm-gpu-site}
mkdir -p "$site/servelm"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl ||
        { echo "the carried wheels did not install" >&2; exit 1; }
fi
for package in agents flavors serving; do  # the servelm.agents, .flavors and .serving packages, from this checkout
    ln -sfn "$root/$package" "$site/servelm/$package"
done
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
missing=$("$python" - <<'EOF'
import importlib.util
def found(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a missing parent package
        return False
need = ["fastapi", "uvicorn", "pydantic", "sse_starlette", "openai", "pytest_asyncio", "servelm.serving"]
print(" ".join(n for n in need if not found(n)))
EOF
)
if [ -n "$missing" ]; then
    echo "missing here: $missing (run scripts/gpu-wheels.sh where a package index is reachable, and carry .whl)" >&2
    exit 1
fi

results=benchmarks/results
work=$(mktemp -d /tmp/servelm-gpu-XXXXXX)
failed=0

echo "=== tests"
"$python" -m pytest -q -p no:cacheprovider \
    tests/flavors/engine/test_gpu.py tests/serving/engines/test_contract.py tests/serving/engines/test_real_model.py \
    -k "not onnx and not llamacpp and not pyfunc" 2>&1 | tee "$work/tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed=1

echo "=== side by side"
big=smollm2
"$python" -c 'import os, sys; from servelm.flavors.transformers.smollm import smollm2_gguf_path; sys.exit(0 if os.path.isfile(smollm2_gguf_path()) else 1)' ||
    big=smollm2-shape
for model in tiny "$big"; do
    (cd benchmarks && timeout 240 "$python" compare.py --model "$model" --systems servelm-transformers \
        --workload real --concurrency 1,16,64 --requests 64 --max-tokens 64 --repeat 1 \
        --out-dir "$work" --name "side-$model") 2>&1 | tail -n 30
    [ "${PIPESTATUS[0]}" -eq 0 ] || failed=1
done

echo "=== roofline"
if [ "$rehearsal" != 1 ]; then
    (cd benchmarks && timeout 180 "$python" gpu_roofline.py --model "$big" --out "$work/roofline.json") || failed=1
fi

"$python" - "$work" "$results/gpu-check.json" "$failed" "$((SECONDS - started))" "$rehearsal" <<'EOF'
import glob, json, os, re, subprocess, sys
work, target, failed, seconds = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
rehearsal = sys.argv[5] == "1"
def read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
log = open(os.path.join(work, "tests.log")).read() if os.path.isfile(os.path.join(work, "tests.log")) else ""
summary = [line for line in log.splitlines() if re.search(r"\d+ (passed|failed|skipped)", line)]
report = {
    "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
    "command": "bash scripts/test-gpu.sh",
    "rehearsal": rehearsal,
    "seconds": seconds,
    "failed": failed,
    "tests": summary[-1] if summary else None,
    "side_by_side": {os.path.basename(p)[5:-5]: read(p) for p in sorted(glob.glob(os.path.join(work, "side-*.json")))},
    "roofline": read(os.path.join(work, "roofline.json")),
}
if rehearsal:  # not a GPU's figures: kept out of benchmarks/results
    target = os.path.join(work, "gpu-check.json")
for path in [target] + ([os.path.join(os.environ["OUT"], "gpu-check.json")] if os.environ.get("OUT") else []):
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
print(json.dumps({k: v for k, v in report.items() if k != "side_by_side"}, indent=2))
EOF
echo "=== done in $((SECONDS - started)) s"
exit "$failed"
