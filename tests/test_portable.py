"""A default build of ``_core`` runs on a pre-AVX CPU (emulated Nehalem) with the same results.

The library is built for x86-64-v2 with AVX2/AVX-512 clones of the hot loops chosen at load
time (issue 14); tests/portable/check_portable.sh is the same check as a script. Skipped
without qemu-user, off x86-64, and for a FUSEDMLP_NATIVE=ON build (made for this CPU only).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fusedmlp._loader import _core

ROOT = Path(__file__).resolve().parent.parent
QEMU = shutil.which("qemu-x86_64")


@pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 not installed (apt-get install qemu-user)")
@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 only")
@pytest.mark.skipif(_core.native_build(), reason="FUSEDMLP_NATIVE=ON build: for this CPU only")
def test_default_build_runs_on_nehalem_with_the_same_results():
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    # libm's FMA variants of exp/sin differ from its SSE2 ones in rare float64 last bits: pin
    # libm to the baseline on both sides so that what is compared is fusedmlp's own code.
    env["GLIBC_TUNABLES"] = "glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F"
    script = str(ROOT / "tests" / "portable" / "fingerprint.py")

    def digest(*prefix):
        r = subprocess.run(
            [*prefix, sys.executable, script], env=env, capture_output=True, text=True, timeout=600
        )
        assert r.returncode == 0, f"{prefix or 'native'}: rc {r.returncode}\n{r.stderr[-2000:]}"
        return r.stdout.strip()

    assert digest(QEMU, "-cpu", "Nehalem") == digest()
