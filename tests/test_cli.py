"""The main job: `python -m fusedmlp train` on the bundled digits and on a user's CSV."""

from __future__ import annotations

import numpy as np
import pytest
from fusedmlp.cli import main


def test_train_on_digits_prints_accuracy(capsys):
    assert main(["train", "--epochs", "3", "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    acc = float(out.split("held-out accuracy ")[1].split()[0])
    assert acc > 0.85


def test_train_on_csv_regression_and_save(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.1
    path = tmp_path / "d.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header="a,b,c,target", comments="")
    ck = tmp_path / "m.npz"
    assert (
        main(
            [
                "train",
                "--data",
                str(path),
                "--target",
                "target",
                "--task",
                "regression",
                "--epochs",
                "20",
                "--lr",
                "1e-2",
                "--verbose",
                "0",
                "--save",
                str(ck),
            ]
        )
        == 0
    )
    assert "held-out mse" in capsys.readouterr().out and ck.exists()


def test_bad_file_and_column_give_one_line_errors(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing.csv")]) == 2
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    assert main(["train", "--data", str(path), "--target", "zzz"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("fusedmlp: error:") for line in err)


def test_train_on_cuda_without_a_device_is_a_clear_error(capsys):
    import fusedmlp as fm

    if fm.cuda_available():
        pytest.skip("a GPU is present")
    rc = main(["train", "--epochs", "1", "--device", "cuda"])
    assert rc != 0
    assert "device: 'cuda' is not usable" in capsys.readouterr().err
