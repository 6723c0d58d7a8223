#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer run of fusedmlp's CPU extension, in one command:
#
#     bash tests/sanitize/run.sh [pytest arguments]
#
# 1. builds _core with -DFUSEDMLP_SANITIZE=ON into build/asan (RelWithDebInfo: the project's
#    -O3 and dispatch clones plus -g, and neither pybind11's LTO nor its strip, so reports
#    carry file:line);
# 2. runs the test suite (or the pytest arguments given) against that build;
# 3. runs the edge-input corpus (tests/sanitize/edge_corpus.py) against it.
#
# The interpreter is not instrumented, so the ASan runtime is preloaded. Leak detection is
# off: CPython keeps its interned objects and module state until exit by design. Every report
# of every process (test subprocesses included) goes to build/asan/reports/, and UB halts the
# process that hit it (-fno-sanitize-recover, halt_on_error): the run is clean when both steps
# pass and that folder holds no report. Exit status 0 = clean.
#
# Environment: PYTHON (default: python3 on PATH), JOBS (build jobs, default 2).
set -u
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
build="build/asan"
reports="$build/reports"

cmake -S . -B "$build" -G Ninja -DPython_EXECUTABLE="$(command -v "$python")" -DFUSEDMLP_CUDA=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFUSEDMLP_SANITIZE=ON >"$build.configure.log" 2>&1 ||
  { cat "$build.configure.log"; exit 2; }
cmake --build "$build" -j "${JOBS:-2}" || exit 2

rm -rf "$reports" && mkdir -p "$reports"
asan="$(gcc -print-file-name=libasan.so)"
ubsan="$(gcc -print-file-name=libubsan.so)"
export LD_PRELOAD="$asan:$ubsan${LD_PRELOAD:+:$LD_PRELOAD}"
export ASAN_OPTIONS="detect_leaks=0:log_path=$root/$reports/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$root/$reports/ubsan"
export FUSEDMLP_BUILD_DIR="$root/$build"
export PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}"

status=0
if [ $# -gt 0 ]; then
  "$python" -m pytest -q -p no:cacheprovider "$@" || status=1
else
  "$python" -m pytest -q -p no:cacheprovider tests || status=1
fi
"$python" tests/sanitize/edge_corpus.py || status=1

n_reports=$(find "$reports" -type f | wc -l)
echo "sanitizer reports: $n_reports (in $reports)"
for f in "$reports"/*; do
  [ -f "$f" ] && { echo "=== $f"; head -40 "$f"; }
done
[ "$n_reports" -eq 0 ] || status=1
exit $status
