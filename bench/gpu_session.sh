#!/usr/bin/env bash
# One call on a lent GPU machine (the `device` tool): build, test, sanitize and time in one go,
# everything it learns under $OUT. Run from the repository root, carrying `.whl` (the
# scipy-openblas32 wheel for Python 3.12, the only build dependency that machine lacks):
#
#   here:   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#             --implementation cp --platform manylinux_2_28_x86_64 -d .whl scipy-openblas32
#   device: run(command="bash bench/gpu_session.sh", carry=[".whl"], timeout_s=600)
#
# Stages (each bounded so the whole call ends inside the 10-minute command limit):
#   1. build _core and _cuda for sm_90 with CMake into build/gpu (16 cores: ~1-2 min);
#   2. every GPU case of the test suite (pytest -m cuda);
#   3. compute-sanitizer memcheck and racecheck on a slice of the GPU Network and kernel tests;
#   4. the GPU benchmark (bench/bench_gpu.py) at two batch sizes, fusedmlp vs PyTorch.
# STAGES="build tests sanitize bench" selects stages; BENCH_ARGS overrides the bench options.
# Output files: device.txt, build.log, tests.log, sanitize.log, bench.log, gpu.md, gpu-*.json.
set -uo pipefail
OUT="${OUT:-/tmp/fusedmlp-gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
STAGES="${STAGES:-build tests sanitize bench}"
has() { [[ " $STAGES " == *" $1 "* ]]; }

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
  --format=csv | tee "$OUT/device.txt"
python3 -c "import torch, cupy; print('torch', torch.__version__, 'cupy', cupy.__version__)" \
  | tee -a "$OUT/device.txt"

build=build/gpu
if has build; then
  t0=$SECONDS
  if ! { cmake -S . -B "$build" -G Ninja -DPython_EXECUTABLE="$(command -v python3)" \
      -DFUSEDMLP_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release &&
    cmake --build "$build" -j "$(nproc)"; } >"$OUT/build.log" 2>&1; then
    tail -40 "$OUT/build.log"
    echo "BUILD FAILED"
    exit 1
  fi
  echo "build: $((SECONDS - t0)) s"
fi
export FUSEDMLP_BUILD_DIR="$build" PYTHONPATH="python:${PYTHONPATH:-}"
python3 -c "import fusedmlp as fm; print('cuda_available:', fm.cuda_available(), fm.cuda_unavailable_reason())" \
  | tee -a "$OUT/device.txt"
# A C++ exception whose message formats a number, through each module's translator: a module
# that links its own libstdc++ used to crash here (see CMakeLists.txt, --exclude-libs).
python3 - <<'PY' 2>&1 | tail -2 | tee -a "$OUT/device.txt"
import numpy as np
import fusedmlp as fm
try:
    fm._core.gemm(np.ones((2, 3), np.float32), np.ones((4, 5), np.float32))
except (TypeError, ValueError) as e:
    print("_core exceptions translate:", type(e).__name__)
if fm.cuda_available():
    import cupy as cp
    try:
        fm._cuda.dropout_forward(cp.ones(3), cp.ones(3), 1.0, 0, 0, 0)
    except ValueError as e:
        print("_cuda exceptions translate:", e)
PY

if has tests; then
  # Every GPU case of the suite (the "cuda" mark: each family test parametrized over the
  # device, and the GPU Network tests), in parallel workers (pytest-xdist is on the device
  # image); TESTS narrows a rerun to the node ids that failed, e.g. TESTS="tests/test_x.py::y".
  t0=$SECONDS
  # shellcheck disable=SC2086
  timeout "${TESTS_TIMEOUT:-200}" python3 -m pytest ${TESTS:-tests -m cuda} \
    -q -p no:cacheprovider -n "${TESTS_WORKERS:-8}" --maxfail=80 -rfE --tb=short \
    >"$OUT/tests.log" 2>&1
  echo "tests: exit $? in $((SECONDS - t0)) s"
  grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -40
  tail -3 "$OUT/tests.log"
fi

if has cputests; then
  # the rest of the suite (CPU paths) on the device's packages: a second dependency set
  t0=$SECONDS
  timeout "${CPUTESTS_TIMEOUT:-150}" python3 -m pytest tests -q -p no:cacheprovider -n 12 \
    -m "not cuda" --deselect tests/test_cuda_network.py -rfE --tb=line \
    >"$OUT/cputests.log" 2>&1
  echo "cputests: exit $? in $((SECONDS - t0)) s"
  grep -E "^(FAILED|ERROR)" "$OUT/cputests.log" | head -20
  tail -2 "$OUT/cputests.log"
fi

if has sanitize; then
  t0=$SECONDS
  {
    for tool in memcheck racecheck; do
      echo "=== $tool"
      timeout "${SANITIZE_TIMEOUT:-110}" compute-sanitizer --tool "$tool" --error-exitcode 9 python3 -m pytest -q \
        -p no:cacheprovider tests/test_cuda_network.py \
        -k "(tracks_cpu and float32 and (relu-adam or gelu-bn-dropout-adamw or rbf-sgd or two-heads-adafactor)) or graph_replay or non_finite"
      echo "$tool exit: $?"
    done
    echo "=== memcheck kernels"
    timeout "${SANITIZE_TIMEOUT:-100}" compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q \
      -p no:cacheprovider -m cuda -k float32 tests/test_dense.py tests/test_loss.py tests/test_batchnorm.py tests/test_dropout.py
    echo "memcheck kernels exit: $?"
  } >"$OUT/sanitize.log" 2>&1
  grep -E "^=== |exit:|ERROR SUMMARY|passed|failed" "$OUT/sanitize.log"
  echo "sanitize: $((SECONDS - t0)) s"
fi

if has bench; then
  t0=$SECONDS
  # shellcheck disable=SC2086
  timeout "${BENCH_TIMEOUT:-200}" python3 -m bench.bench_gpu ${BENCH_ARGS:---batches 16384,262144 --quick} \
    --out "$OUT" >"$OUT/bench.log" 2>&1
  echo "bench: exit $? in $((SECONDS - t0)) s"
  [ -f "$OUT/gpu.md" ] && cat "$OUT/gpu.md" || tail -20 "$OUT/bench.log"
fi
