#!/usr/bin/env bash
# A default (portable) build of fusedmlp._core runs on an emulated pre-AVX x86-64 (Nehalem,
# SSE4.2) and prints the same digest of its kernels' outputs as on this machine, where the
# AVX2/AVX-512 clones run (tests/portable/fingerprint.py).
# glibc's libm picks FMA variants of exp/sin/... on newer CPUs that differ from its SSE2 ones in
# rare last bits of float64 results; GLIBC_TUNABLES pins libm to its baseline variants on both
# sides, so the comparison is of fusedmlp's own code. (Without it, float32 results still agree
# bit for bit; a few float64 elements of exp/sin-based kernels differ by 1 ulp, from libm.)
# Usage: FUSEDMLP_BUILD_DIR=build/dev PYTHONPATH=python bash tests/portable/check_portable.sh
# Needs qemu-user (Debian: apt-get install qemu-user).
set -euo pipefail
cd "$(dirname "$0")/../.."
qemu=$(command -v qemu-x86_64 || true)
[ -n "$qemu" ] || { echo "qemu-x86_64 not found (apt-get install qemu-user)"; exit 2; }
py=$(command -v python)
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F
native=$("$py" tests/portable/fingerprint.py)
old=$("$qemu" -cpu Nehalem "$py" tests/portable/fingerprint.py)
echo "native : $native"
echo "Nehalem: $old"
[ "$native" = "$old" ] && echo "OK: same results" || { echo "MISMATCH"; exit 1; }
