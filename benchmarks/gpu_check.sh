#!/usr/bin/env bash
# The checks and figures that need a CUDA GPU, in one go on a machine that has one:
#   1. benchmarks/bench.py --only gpu (the speedrun and best recipes; flags after OUTDIR go to bench.py),
#   2. the test suite with CUDA present (device auto picks it): the CUDA-only tests first, then the rest.
# Usage, from a source checkout: CNNLAB_DATA=FOLDER bash benchmarks/gpu_check.sh OUTDIR [bench.py flags ...]
# It installs nothing: src/ goes on PYTHONPATH and the python3 that holds torch runs everything, so it also works on
# a machine with no package index. Test modules whose optional dependency is missing there fail to collect and are
# counted in the summary, not hidden. BENCH_TIMEOUT and TEST_TIMEOUT (seconds) bound the two steps (0 skips
# that step); TEST_WORKERS sets the suite's pytest-xdist workers (half the cores, two threads each, unless set: then one
# thread each); TESTS the test paths (default tests); RERUN_TIMEOUT bounds the rerun of the failed tests with their
# tracebacks (default 120 s, 0: none). The logs, the bench rows (bench.json) and the scratch folder of a failed bench run
# (bench-scratch.tgz) land in OUTDIR.
set -u
out=${1:?usage: gpu_check.sh OUTDIR [bench.py flags ...]}
shift
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg TMPDIR=${TMPDIR:-/tmp}
py=${PYTHON:-python3}

{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    $py -c "import platform, torch, torchvision; print('python', platform.python_version(), 'torch', torch.__version__,
'cuda', torch.version.cuda, 'torchvision', torchvision.__version__, 'gpu', torch.cuda.get_device_name())"
    echo "cpus: $(nproc)"
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

if [ "${BENCH_TIMEOUT:-420}" != 0 ]; then  # BENCH_TIMEOUT=0: the tests only
    start=$(date +%s)
    timeout "${BENCH_TIMEOUT:-420}" $py benchmarks/bench.py --only gpu --out "$out/bench.json" "$@" \
        >"$out/bench.txt" 2>&1
    echo "bench.py --only gpu $*: exit $? after $(($(date +%s) - start)) s"
    cat "$out/bench.txt"
    # bench.py keeps its scratch folder when a program fails or is killed: its logs and run records, not weights
    scratch=$(ls -d "$TMPDIR"/cnnlab-bench-* 2>/dev/null | tail -n 1)
    if [ -n "$scratch" ]; then
        tar -czf "$out/bench-scratch.tgz" -C "$scratch" --exclude='*.pt' --exclude='*.pt.tmp' . &&
            echo "kept $scratch"
    fi
fi

[ "${TEST_TIMEOUT:-150}" = 0 ] && exit 0  # TEST_TIMEOUT=0: the figures only
pytest=($py -m pytest -p no:cacheprovider -p no:benchmark --tb=short --continue-on-collection-errors
        --ignore tests/test_explore_browser.py --ignore tests/test_explore_static_browser.py)  # no browser there
# The CUDA-only tests (marker gpu) first and alone, so that a suite cut short by its limit still says how they did.
read -ra tests <<<"${TESTS:-tests}"
timeout 120 "${pytest[@]}" -q -m gpu "${tests[@]}" >"$out/tests-gpu.txt" 2>&1
echo "CUDA-only tests: exit $?"
tail -n 3 "$out/tests-gpu.txt"
start=$(date +%s)
# Two threads a worker fill the cores without oversubscribing them. SIGINT at the limit ends pytest without a kill,
# so that its log keeps every test it ran.
parallel=() threads=2
[ -n "${TEST_WORKERS:-}" ] && threads=1
$py -c "import xdist" 2>/dev/null && parallel=(-n "${TEST_WORKERS:-$(($(nproc) / 2))}")  # pytest-xdist, where installed
OMP_NUM_THREADS=$threads timeout -s INT -k 20 "${TEST_TIMEOUT:-150}" "${pytest[@]}" -v "${parallel[@]}" -m "not gpu" \
    "${tests[@]}" >"$out/tests.txt" 2>&1
echo "tests: exit $? after $(($(date +%s) - start)) s"
grep -E "FAILED|ERROR" "$out/tests.txt" | grep -v "^\[gw" | head -n 60
tail -n 3 "$out/tests.txt"
# Cut short by its limit under pytest-xdist, the run ended in an INTERNALERROR without the failures' tracebacks (seen
# on an H100): the tests that failed, as the verbose progress lines name them, run again with their tracebacks.
mapfile -t failed < <(sed -nE -e 's/^\[gw[0-9]+\] \[ *[0-9]+%\] (FAILED|ERROR) (.*[^ ]) *$/\2/p' \
                                -e 's/^(tests\/.*[^ ]) (FAILED|ERROR) +\[ *[0-9]+%\]$/\1/p' "$out/tests.txt" | sort -u)
if [ "${#failed[@]}" -gt 0 ] && [ "${RERUN_TIMEOUT:-120}" != 0 ]; then
    OMP_NUM_THREADS=$threads timeout -s INT -k 20 "${RERUN_TIMEOUT:-120}" "${pytest[@]}" -q "${parallel[@]}" \
        "${failed[@]}" >"$out/tests-failed.txt" 2>&1
    echo "the ${#failed[@]} failed tests again, with their tracebacks in tests-failed.txt: exit $?"
    tail -n "$((${#failed[@]} + 2))" "$out/tests-failed.txt"
fi
