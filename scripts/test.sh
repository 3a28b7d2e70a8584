#!/usr/bin/env bash
# The whole test suite on a fresh clone, in venvs of its own (never the Quickstart's .venv): the linter, the
# formatter's check and the type checker, the main suite (.venv-test, every extra it uses), the kernels' and
# engines' tests again with the CPU's AVX-512 paths switched off where it has them (what an AVX2-only machine
# runs), the vLLM engine's tests (scripts/test-vllm.sh, .venv-vllm) and the Ray Serve and Spark tests
# (scripts/test-scale.sh, .venv-scale). Every part runs whatever the others did; each one's output goes to the
# terminal and to .test-logs/PART.log; a summary names each part's result and the tests' totals. Exits non-zero
# if any part failed. A part whose software cannot be installed here says SKIPPED with the reason.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p .test-logs
rm -f .test-logs/*.log
summary=()
failed=0

# part NAME COMMAND...: run one part, its output teed to .test-logs/NAME.log; record its result and time.
part() {
    local name=$1 start=$SECONDS status rc
    shift
    echo "=== ${name}"
    "$@" 2>&1 | tee ".test-logs/${name}.log"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        status="FAILED (exit ${rc})"
        failed=1
    elif grep -q '^SKIPPED' ".test-logs/${name}.log"; then
        status="skipped: $(grep -m1 '^SKIPPED' ".test-logs/${name}.log" | cut -c9-)"
    else
        status="passed"
    fi
    summary+=("$(printf '%-10s %s (%d s)' "${name}" "${status}" $((SECONDS - start)))")
}

install() {
    python3 -m venv .venv-test && .venv-test/bin/pip install --progress-bar off -e '.[test]' || return 1
    # llama.cpp's prebuilt wheel, for the llamacpp engine's tests: where it cannot install, they skip with the reason
    .venv-test/bin/pip install --progress-bar off 'xllamacpp>=2026.10' ||
        echo "llama.cpp's wheel (xllamacpp) could not be installed here: the llamacpp engine's tests will skip"
}

# The tests whose paths depend on the CPU's instruction set: the attention kernels, the runners, both engines on
# the tiny model and SmolLM2, and the benchmarks that time them.
CPU_DEPENDENT_TESTS=(
    tests/flavors/engine tests/flavors/generation tests/flavors/transformers tests/flavors/onnx
    tests/serving/engines/test_contract.py tests/serving/engines/test_real_model.py
    tests/benchmarks/test_onnx_step.py tests/benchmarks/test_fidelity.py
)

# Those tests again as an AVX2-only CPU runs them: servelm's own switch, and torch's, oneDNN's, MKL's and numba's
# (cpu_features.AVX2_SWITCHES).
fallback() {
    if ! grep -qw -e avx512f -e amx_bf16 /proc/cpuinfo 2>/dev/null; then
        echo "SKIPPED this CPU has no AVX-512: the main suite ran its fallback paths"
        return 0
    fi
    SERVELM_CPU_FEATURES_OFF=avx512,avx_vnni ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=+avx2 \
        .venv-test/bin/python -m pytest -q -p no:cacheprovider "${CPU_DEPENDENT_TESTS[@]}"
}

part install install
if [ "$failed" -eq 0 ]; then
    part lint .venv-test/bin/ruff check .
    part format .venv-test/bin/ruff format --check .
    part types .venv-test/bin/mypy
    part main .venv-test/bin/python -m pytest -q
    part avx2-paths fallback
fi
part vllm bash scripts/test-vllm.sh
part scale bash scripts/test-scale.sh

# The tests' totals over every pytest run (each one's closing line), then each part's result.
totals=$(cat .test-logs/*.log | grep -E '^=*\s*[0-9]+ [a-z]+.* in [0-9.]+s( \([0-9:]+\))?\s*=*$' |
    grep -oE '[0-9]+ (passed|failed|errors?|skipped)' |
    awk '{n[$2 ~ /^error/ ? "failed" : $2] += $1} END {printf "%d passed, %d failed, %d skipped", n["passed"], n["failed"], n["skipped"]}')
echo
echo "=== summary"
printf '%s\n' "${summary[@]}"
echo "tests: ${totals}"
exit "$failed"
