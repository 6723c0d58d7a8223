#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer run of fusedmlp's CPU extension, in one command:
#
#     bash tests/sanitize/run.sh [pytest arguments]
#
# 1. builds _core with -DFUSEDMLP_SANITIZE=ON into build/asan (RelWithDebInfo: the project's
#    -O3 and dispatch clones plus -g, and neither pybind11's LTO nor its strip, so reports
#    carry file:line);
# 2. runs the test suite (or the pytest arguments given) against that build (test_memory.py
#    with ASan's quarantine off, test_portable.py not at all: see below);
# 3. runs the edge-input corpus (tests/sanitize/edge_corpus.py) against it.
#
# Measured (2 shared cores): build ~15 min, suite ~4 min, corpus (82,196 calls) ~20 min.
#
# The interpreter is not instrumented, so the ASan runtime is preloaded. Leak detection is
# off: CPython keeps its interned objects and module state until exit by design. Every report
# of every process (test subprocesses included) goes to build/asan/reports/, and UB halts the
# process that hit it (-fno-sanitize-recover, halt_on_error): the run is clean when both steps
# pass and that folder holds no report. Exit status 0 = clean.
#
# Environment: PYTHON (default: python3 on PATH), JOBS (build jobs, default 2), CORPUS (corpus
# groups to run, e.g. "activations losses"; default all).
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

# The whole suite. Two files are treated apart, as their subject is what ASan itself changes:
# test_memory.py bounds the growth of the RSS, and ASan's quarantine keeps freed blocks mapped
# (up to 256 MB) so that a use after free is caught: 62 MB of growth over 300 model cycles
# under it, measured, against a 20 MB bound. It runs in its own pytest with the quarantine off
# (everything else still checked). test_portable.py runs the interpreter under qemu-x86_64,
# which cannot map ASan's shadow memory (killed, rc -9): it is left to the normal suite;
# what it calls runs here through the other tests and the corpus.
status=0
if [ $# -gt 0 ]; then
  "$python" -m pytest -q -p no:cacheprovider "$@" || status=1
else
  "$python" -m pytest -q -p no:cacheprovider tests \
    --ignore=tests/test_memory.py --ignore=tests/test_portable.py || status=1
  ASAN_OPTIONS="$ASAN_OPTIONS:quarantine_size_mb=0" \
    "$python" -m pytest -q -p no:cacheprovider tests/test_memory.py || status=1
fi
# shellcheck disable=SC2086 # CORPUS is a list of group names
"$python" tests/sanitize/edge_corpus.py ${CORPUS:-} || status=1

n_reports=$(find "$reports" -type f | wc -l)
echo "sanitizer reports: $n_reports (in $reports)"
for f in "$reports"/*; do
  [ -f "$f" ] && { echo "=== $f"; head -40 "$f"; }
done
[ "$n_reports" -eq 0 ] || status=1
exit $status
