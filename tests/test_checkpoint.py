"""Exact resume (global epoch/step position, initial_epoch, lr = 0), checkpoints under faults
(atomic writes, killed saves, truncation, bit flips, foreign and crafted files, zip bombs,
invalid state) and diverging runs (fit stops, EarlyStopping keeps the best weights)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tracemalloc
import zipfile

import fusedmlp as fm
import numpy as np
import pytest
from fusedmlp.datasets import load_digits


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits()
    idx = np.random.default_rng(0).permutation(len(X))
    return X[idx].astype(np.float32), y[idx]


# ---------------------------------------------------------------------- exact resume
def _resume_trainer(dtype):
    model = fm.MLP(n_in=64, hidden=[24], n_out=10, dropout=0.2, batchnorm=True, seed=5, dtype=dtype)
    # a per-step warm-up from lr = 0 into a per-epoch step decay: both positions matter
    sched = fm.schedules.Warmup(
        lr=1e-2,
        warmup=10,
        start_factor=0.0,
        after=fm.schedules.StepDecay(lr=1e-2, step_size=1, gamma=0.7),
    )
    return fm.Trainer(model, optimizer=fm.optim.Adam(lr=1e-2), schedule=sched)


def _state(t):
    net = t.model._net
    return (
        t.model.parameters.copy(),
        net.buffers().copy(),
        net.opt_state().copy(),
        (t.epoch, t.step_count, int(net.opt_step), int(net.rng_step), t.schedule.state_dict()),
        t.history.history,
        t.history.epoch,
    )


def _assert_same(a, b):
    for x, y in zip(a[:3], b[:3], strict=True):
        np.testing.assert_array_equal(x, y)  # bit-identical
    assert a[3:] == b[3:]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fit_in_pieces_save_load_and_initial_epoch_are_one_run(tmp_path, digits, dtype):
    X, y = digits[0][:400] / 16.0, digits[1][:400]
    X = X.astype(dtype)
    kw = dict(batch_size=32, verbose=0, validation_split=0.25)

    one = _resume_trainer(dtype)
    one.fit(X, y, epochs=4, **kw)

    two = _resume_trainer(dtype)
    two.fit(X, y, epochs=2, **kw)
    two.fit(X, y, epochs=2, **kw)

    first = _resume_trainer(dtype)
    first.fit(X, y, epochs=2, **kw)
    first.save(tmp_path / "half.npz")
    loaded = fm.Trainer.load(tmp_path / "half.npz")
    loaded.fit(X, y, epochs=2, **kw)

    keras = fm.Trainer.load(tmp_path / "half.npz")
    keras.fit(X, y, epochs=4, initial_epoch=keras.epoch, **kw)

    ref = _state(one)
    assert ref[3][0] == 4 and ref[5] == [0, 1, 2, 3]
    for other in (two, loaded, keras):
        _assert_same(ref, _state(other))


def test_initial_epoch_is_the_global_epoch_index(digits):
    X, y = digits[0][:64] / 16.0, digits[1][:64]
    seen = []

    class Record(fm.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(epoch)

    t = fm.Trainer(fm.MLP(n_in=64, hidden=[8], n_out=10, seed=0), callbacks=[Record()])
    hist = t.fit(X, y, epochs=4, initial_epoch=2, batch_size=16, verbose=0)
    assert seen == [2, 3] and hist.epoch == [2, 3] and t.epoch == 4
    with pytest.raises(ValueError, match="epochs: with initial_epoch=4.*must be > 4"):
        t.fit(X, y, epochs=4, initial_epoch=4, verbose=0)
    with pytest.raises(ValueError, match="initial_epoch: expected >= 0"):
        t.fit(X, y, epochs=4, initial_epoch=-1, verbose=0)
    with pytest.raises(TypeError, match="initial_epoch"):
        t.fit(X, y, epochs=4, initial_epoch="2", verbose=0)
    assert t.epoch == 4  # rejected calls leave the position alone


def test_shuffle_order_depends_on_the_epoch_index_only(digits):
    X, y = digits[0][:96] / 16.0, digits[1][:96]

    def run(**kw):
        t = fm.Trainer(fm.MLP(n_in=64, hidden=[8], n_out=10, seed=1), optimizer=fm.optim.SGD(0.1))
        t.fit(X, y, batch_size=16, verbose=0, **kw)
        return t.model.parameters.copy()

    # plain SGD has no state: starting at epoch 1 from the initial weights is one epoch
    # trained on epoch 1's order, which differs from epoch 0's
    assert not np.array_equal(run(epochs=1), run(epochs=2, initial_epoch=1))
    np.testing.assert_array_equal(run(epochs=2, initial_epoch=1), run(epochs=2, initial_epoch=1))


# ---------------------------------------------------------------------- lr = 0
@pytest.mark.parametrize("name", fm.optim.names())
def test_lr_zero_is_a_frozen_step_for_every_optimizer(name, digits):
    X, y = digits[0][:64] / 16.0, digits[1][:64]
    opt = fm.optim.get(name, lr=0.0)
    t = fm.Trainer(fm.MLP(n_in=64, hidden=[8], n_out=10, seed=0), optimizer=opt)
    before = t.model.parameters.copy()
    t.fit(X, y, epochs=2, batch_size=16, verbose=0)
    np.testing.assert_array_equal(t.model.parameters, before)
    assert t.step_count == 8 and int(t.model._net.opt_step) == 8  # the steps did run
    w = np.ones((3, 4))
    fm.optim.get(name, lr=0.0).step([w], [np.full((3, 4), 0.5)])
    np.testing.assert_array_equal(w, 1.0)
    for bad in (-1e-3, math.nan, math.inf):
        with pytest.raises(ValueError, match="lr"):
            fm.optim.get(name, lr=bad)
    with pytest.raises(ValueError, match="lr"):
        fm.optim.get(name, lr=0.01).step([w], [w.copy()], lr=-1.0)


@pytest.mark.parametrize(
    "ctor",
    [
        lambda lr: fm.schedules.Constant(lr),
        lambda lr: fm.schedules.StepDecay(lr),
        lambda lr: fm.schedules.MultiStep(lr),
        lambda lr: fm.schedules.Exponential(lr),
        lambda lr: fm.schedules.LinearDecay(lr),
        lambda lr: fm.schedules.Cosine(lr),
        lambda lr: fm.schedules.Warmup(lr),
        lambda lr: fm.schedules.OneCycle(max_lr=lr),
        lambda lr: fm.schedules.SGDR(lr),
        lambda lr: fm.schedules.ReduceOnPlateau(lr),
    ],
)
def test_lr_zero_schedules(ctor):
    s = ctor(0.0)
    assert [s.lr_at(t, t) for t in (0, 5, 50)] == [0.0, 0.0, 0.0]
    for bad in (-0.1, math.nan):
        with pytest.raises(ValueError, match="lr"):
            ctor(bad)


def test_warmup_from_zero_and_lr_scheduler_on_a_zero_base(digits):
    X, y = digits[0][:64] / 16.0, digits[1][:64]
    # Keras' LearningRateScheduler on an optimizer that starts at 0
    cb = fm.callbacks.LearningRateScheduler(lambda epoch, lr: 0.01 * epoch)
    t = fm.Trainer(
        fm.MLP(n_in=64, hidden=[8], n_out=10, seed=0),
        optimizer=fm.optim.SGD(lr=0.0),
        callbacks=[cb],
    )
    before = t.model.parameters.copy()
    hist = t.fit(X, y, epochs=1, batch_size=16, verbose=0)
    np.testing.assert_array_equal(t.model.parameters, before)
    hist = t.fit(X, y, epochs=2, batch_size=16, verbose=0)
    assert hist.history["lr"] == [0.0, 0.01, 0.02]
    assert not np.array_equal(t.model.parameters, before)


# ---------------------------------------------------------------------- argument types
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(optimizer=3), TypeError, "optimizer: expected a fusedmlp.optim optimizer"),
        (dict(optimizer="adamm"), ValueError, "optimizer: unknown optimizer"),
        (dict(loss=3), TypeError, "loss: expected a loss name"),
        (dict(loss=[3]), TypeError, "loss"),
        (dict(schedule="cosine"), TypeError, "schedule: expected a fusedmlp.schedules"),
        (dict(schedule=0.1), TypeError, "schedule"),
        (dict(callbacks=fm.callbacks.EarlyStopping()), TypeError, "callbacks: expected a list"),
        (dict(callbacks=[print]), TypeError, "callbacks"),
        (dict(metrics="accuracy"), TypeError, "metrics: expected a list"),
        (dict(metrics=[3]), TypeError, "metrics"),
    ],
)
def test_trainer_argument_types(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fm.Trainer(fm.MLP(n_in=2, hidden=[3], n_out=2), **kwargs)


# ---------------------------------------------------------------------- checkpoints
def _small_trainer(seed=0):
    t = fm.Trainer(
        fm.MLP(n_in=4, hidden=[6], n_out=3, batchnorm=True, seed=seed),
        optimizer=fm.optim.Adam(lr=1e-2),
    )
    X = np.random.default_rng(seed).normal(size=(32, 4)).astype(np.float32)
    t.fit(X, np.arange(32) % 3, epochs=2, batch_size=8, verbose=0)
    return t


def _members(path):
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(bytes(z["header"]).decode())
        return header, {k: z[k] for k in ("params", "buffers", "opt_state")}


def _write(path, header, arrays):
    with open(path, "wb") as f:
        np.savez(f, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)


def test_save_is_atomic_fsynced_and_in_the_same_directory(tmp_path, monkeypatch):
    t = _small_trainer()
    calls = []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(
        os, "replace", lambda a, b: (calls.append(("replace", a, b)), real_replace(a, b))
    )
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(("fsync",)), real_fsync(fd)))
    t.save(tmp_path / "c.npz")
    kinds = [c[0] for c in calls]
    assert kinds.index("fsync") < kinds.index("replace")  # data on disk before the rename
    assert kinds[-1] == "fsync"  # and the directory entry after it
    _, src, dst = calls[kinds.index("replace")]
    assert os.path.dirname(src) == os.path.dirname(os.path.abspath(dst))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]


_KILLED_SAVE = """
import os, signal, sys
import numpy as np
import fusedmlp as fm

t = fm.Trainer.load(sys.argv[1])
t.model.parameters[:] = 0.5

def savez_then_die(f, **arrays):
    f.write(b"PK\\x03\\x04" + b"\\0" * 100000)  # part of the new file
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

np.savez = savez_then_die
t.save(sys.argv[1])
"""


def test_killed_save_keeps_the_previous_checkpoint_and_the_next_save_cleans_up(tmp_path):
    path = tmp_path / "run.npz"
    t = _small_trainer()
    t.save(path)
    before = path.read_bytes()
    proc = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(path)], env=os.environ.copy())
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0
    np.testing.assert_array_equal(fm.Trainer.load(path).model.parameters, t.model.parameters)
    # a temp file of a live writer (this process, the parent) is not touched
    own = tmp_path / f".run.npz.{os.getpid()}.abc.tmp"
    live = tmp_path / f".run.npz.{os.getppid()}.abc.tmp"
    dead_pid = leftovers[0].name.split(".")[3]  # .run.npz.<pid>.<random>.tmp
    other = tmp_path / f".other.npz.{dead_pid}.abc.tmp"  # another checkpoint's
    sibling = tmp_path / f".run.npz.7.{dead_pid}.abc.tmp"  # a save of "run.npz.7"
    for p in (own, live, other, sibling):
        p.write_bytes(b"x")
    t.save(path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["run.npz", own.name, live.name, other.name, sibling.name])


@pytest.fixture
def saved(tmp_path):
    t = _small_trainer()
    path = tmp_path / "good.npz"
    t.save(path)
    return t, path


def test_truncated_files_raise_a_value_error_naming_the_path(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    for n in sorted({0, 1, 10, 100, *range(0, len(data), max(1, len(data) // 37)), len(data) - 1}):
        cut.write_bytes(data[:n])
        with pytest.raises(ValueError, match="path: '.*cut.npz'"):
            fm.Trainer.load(cut)


def test_bit_flips_are_detected_or_harmless(saved, tmp_path):
    t, path = saved
    data = bytearray(path.read_bytes())
    flipped = tmp_path / "flip.npz"
    rng = np.random.default_rng(0)
    positions = sorted(set(rng.integers(0, len(data), 300).tolist()) | set(range(0, 64)))
    # the byte ranges of the members' data (CRC-32 protected): a flip there must be rejected;
    # a flip elsewhere (zip metadata nothing reads) may load, and then loads the same values
    members = []
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            head = data[info.header_offset : info.header_offset + 30]
            name_len, extra_len = (
                int.from_bytes(head[26:28], "little"),
                int.from_bytes(head[28:30], "little"),
            )
            start = info.header_offset + 30 + name_len + extra_len
            members.append(range(start, start + info.compress_size))
    in_data = [p for p in positions if any(p in r for r in members)]
    assert len(in_data) > 100  # the check below is not vacuous
    rejected = set()
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 1 << int(rng.integers(8))
        flipped.write_bytes(bad)
        try:
            u = fm.Trainer.load(flipped)
        except ValueError as exc:
            assert "flip.npz" in str(exc)
            rejected.add(pos)
            continue
        # a flip in a field nothing reads (a zip timestamp, say): the same checkpoint
        np.testing.assert_array_equal(u.model.parameters, t.model.parameters)
        np.testing.assert_array_equal(u.model._net.opt_state(), t.model._net.opt_state())
        assert (u.epoch, u.step_count, u.lr_scale) == (t.epoch, t.step_count, t.lr_scale)
        assert u.history.history == t.history.history
    assert set(in_data) <= rejected, sorted(set(in_data) - rejected)


def test_foreign_files(tmp_path):
    plain = tmp_path / "plain.npz"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="plain.npz.*not a fusedmlp checkpoint"):
        fm.Trainer.load(plain)
    other = tmp_path / "other.npz"
    np.savez(other, header=np.frombuffer(b'{"format": "other"}', dtype=np.uint8))
    with pytest.raises(ValueError, match="other.npz.*not a fusedmlp checkpoint"):
        fm.Trainer.load(other)
    text = tmp_path / "text.npz"
    text.write_text("params = [1, 2, 3]\n")
    with pytest.raises(ValueError, match="text.npz.*not a readable fusedmlp checkpoint"):
        fm.Trainer.load(text)
    with pytest.raises(FileNotFoundError):
        fm.Trainer.load(tmp_path / "missing.npz")


class _Payload:
    """Unpickling this creates a marker file: a crafted checkpoint that ran code."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_never_unpickles(saved, tmp_path):
    _, path = saved
    header, arrays = _members(path)
    _Payload.marker = str(tmp_path / "pwned")
    for member in ("params", "opt_state"):
        evil = dict(arrays)
        evil[member] = np.array([_Payload()], dtype=object)
        crafted = tmp_path / f"evil_{member}.npz"
        with open(crafted, "wb") as f:
            np.savez(
                f,
                header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
                **evil,
            )
        with pytest.raises(ValueError, match=f"evil_{member}.npz.*{member}.*dtype object"):
            fm.Trainer.load(crafted)
        assert not os.path.exists(_Payload.marker)


def _npy(descr: str, shape: tuple, payload: bytes) -> bytes:
    """An npy file (format 1.0) with the given header and data bytes, however they disagree."""
    text = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + payload


def _crafted(path, header, members: dict, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        raw = json.dumps(header).encode()
        zf.writestr("header.npy", _npy("|u1", (len(raw),), raw))
        for name, data in members.items():
            zf.writestr(name + ".npy", data)


def test_zip_bomb_is_rejected_before_allocating(saved, tmp_path):
    _, path = saved
    header, arrays = _members(path)
    # params: deflated zeros declaring 64 Mi float32 numbers (256 MB) in well under 1 MB
    bomb = tmp_path / "bomb.npz"
    declared = 64 << 20
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        raw = json.dumps(header).encode()
        zf.writestr("header.npy", _npy("|u1", (len(raw),), raw))
        with zf.open("params.npy", "w", force_zip64=True) as f:
            f.write(_npy("<f4", (declared,), b""))
            zero = bytes(1 << 20)
            for _ in range(declared * 4 >> 20):
                f.write(zero)
        for name in ("buffers", "opt_state"):
            zf.writestr(name + ".npy", _npy("<f4", arrays[name].shape, arrays[name].tobytes()))
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="bomb.npz.*compressed"):
            fm.Trainer.load(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
    # stored members whose npy headers disagree with the model or with their own size
    good = {k: _npy("<f4", a.shape, a.tobytes()) for k, a in arrays.items()}
    n = arrays["params"].size
    for name, data, match in (
        ("params", _npy("<f4", (1 << 40,), arrays["params"].tobytes()), "params has shape"),
        ("params", _npy("<f4", (n,), arrays["params"].tobytes()[:-4]), "params declares"),
        ("params", _npy("<f4", (n,), arrays["params"].tobytes() + b"1234"), "params declares"),
        ("opt_state", _npy("<f4", (2, 2), b"\0" * 16), "1-d"),
        ("buffers", _npy("|O", (1,), b"\0" * 8), "dtype object"),
        ("buffers", b"\x93NUMPY\x01\x00\xff\xff" + b"{" * 200, "damaged buffers"),
    ):
        lying = tmp_path / "lying.npz"
        _crafted(lying, header, {**good, name: data})
        with pytest.raises(ValueError, match=f"lying.npz.*{match}"):
            fm.Trainer.load(lying)
    extra = tmp_path / "extra.npz"
    _crafted(extra, header, {**good, "script": b"print(1)"})
    with pytest.raises(ValueError, match="extra.npz.*not a fusedmlp checkpoint"):
        fm.Trainer.load(extra)
    # the well-formed crafted file loads: the checks above are about the lies alone
    ok = tmp_path / "ok.npz"
    _crafted(ok, header, good)
    np.testing.assert_array_equal(fm.Trainer.load(ok).model.parameters, arrays["params"])


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda h, a: a["params"].__setitem__(0, np.nan), "params contains NaN or Inf"),
        (lambda h, a: a["opt_state"].__setitem__(1, np.inf), "opt_state contains NaN or Inf"),
        (lambda h, a: a["buffers"].__setitem__(0, np.nan), "buffers contains NaN or Inf"),
        (lambda h, a: h.__setitem__("opt_step", -5), "opt_step: expected >= 0"),
        (lambda h, a: h.__setitem__("rng_step", -1), "rng_step"),
        (lambda h, a: h.__setitem__("epoch", 2.5), "epoch"),
        (lambda h, a: h.__setitem__("step_count", "7"), "step_count"),
        (lambda h, a: h.__setitem__("lr_scale", math.nan), "lr_scale"),
        (lambda h, a: h.__setitem__("lr_scale", -1.0), "lr_scale"),
        (lambda h, a: h.__setitem__("version", 99), "version 99"),
        (lambda h, a: h.pop("opt_step"), "opt_step"),
        (lambda h, a: a.__setitem__("params", a["params"][:-1]), "params has shape"),
        (lambda h, a: a.__setitem__("params", a["params"].astype(np.float64)), "float64"),
        (lambda h, a: a.__setitem__("params", a["params"].reshape(1, -1)), "1-d"),
        (lambda h, a: h["optimizer"]["hyper"].__setitem__("lr", -1.0), "lr"),
    ],
)
def test_invalid_state_is_rejected(saved, tmp_path, change, match):
    _, path = saved
    header, arrays = _members(path)
    arrays = {k: a.copy() for k, a in arrays.items()}
    change(header, arrays)
    bad = tmp_path / "state.npz"
    _write(bad, header, arrays)
    with pytest.raises(ValueError, match=match) as info:
        fm.Trainer.load(bad)
    assert "state.npz" in str(info.value)


def test_save_refuses_non_finite_state_and_keeps_the_previous_file(saved):
    t, path = saved
    before = path.read_bytes()
    t.model.parameters[0] = np.nan
    with pytest.raises(ValueError, match="params: contains NaN or Inf.*not written"):
        t.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


# ---------------------------------------------------------------------- divergence
def test_sgd_at_lr_1e4_on_digits_stops_with_a_warning():
    X, y = load_digits()  # as shipped: pixel values 0..16, the classes in order
    model = fm.MLP(n_in=64, hidden=[128, 128], n_out=10, seed=0)
    t = fm.Trainer(model, optimizer=fm.optim.SGD(1e4))
    with pytest.warns(RuntimeWarning, match=r"diverged at epoch 0 \(step \d+, batch \d+\)"):
        hist = t.fit(X, y, epochs=10, verbose=0, validation_split=0.2)
    d = t.diverged
    assert d is not None and d.epoch == 0 and d.what == "loss" and not math.isfinite(d.value)
    assert d.step == t.step_count
    assert hist.epoch == [0] and t.epoch == 1
    assert set(hist.history) == {"loss", "lr", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 1 for v in hist.history.values())
    assert hist.history["lr"] == [1e4] and math.isnan(hist.history["val_loss"][0])
    with pytest.raises(ValueError, match="diverged"):
        t.predict(X[:4])


def test_divergence_found_at_the_epoch_end():
    X = np.ones((8, 2), np.float32)
    y = np.ones((8, 1), np.float32)
    t = fm.Trainer(
        fm.MLP(n_in=2, hidden=[4], n_out=1, seed=0),
        loss="mse",
        optimizer=fm.optim.SGD(lr=1e30),
        metrics=("mse",),
    )
    with pytest.warns(RuntimeWarning, match="end of the epoch"):
        t.fit(X, y, epochs=5, batch_size=8, verbose=0)
    # the one batch loss was finite; the update made the outputs overflow
    assert t.diverged.what in ("parameters", "outputs") and t.diverged.batch is None
    assert t.history.epoch == [0] and math.isnan(t.history.history["loss"][0])


def test_early_stopping_restores_the_best_weights_when_the_run_diverges(digits, tmp_path):
    X, y = digits
    model = fm.MLP(n_in=64, hidden=[32], n_out=10, seed=0)
    snapshots = []

    class Snapshot(fm.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append(model.parameters.copy())

    es = fm.callbacks.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)
    blow_up = fm.callbacks.LearningRateScheduler(lambda e, lr: 1e-3 if e < 3 else 1e30)
    ckpt = fm.callbacks.ModelCheckpoint(str(tmp_path / "last.npz"))
    t = fm.Trainer(
        model, optimizer=fm.optim.SGD(lr=1e-3), callbacks=[blow_up, es, Snapshot(), ckpt]
    )
    with pytest.warns(RuntimeWarning, match="diverged at epoch 3"):
        hist = t.fit(
            X[:1000], y[:1000], epochs=10, verbose=0, validation_data=(X[1000:1300], y[1000:1300])
        )
    assert t.diverged.epoch == 3 and hist.epoch == [0, 1, 2, 3]
    assert es.best_epoch == int(np.argmin(hist.history["val_loss"][:3]))
    np.testing.assert_array_equal(model.parameters, snapshots[es.best_epoch])
    assert np.isfinite(t.evaluate(X[1000:1300], y[1000:1300])["loss"])
    # the diverged epoch was not checkpointed: the last file is epoch 2's and loads
    assert fm.Trainer.load(tmp_path / "last.npz").epoch == 3
    np.testing.assert_array_equal(
        fm.Trainer.load(tmp_path / "last.npz").model.parameters, snapshots[2]
    )


def test_non_finite_values_never_count_as_improvements():
    es = fm.callbacks.EarlyStopping(monitor="loss", patience=1)
    es.trainer = type("T", (), {"step_count": 0})()
    es.on_train_begin()
    es.on_epoch_end(0, {"loss": math.nan})
    assert es.best is None
    rl = fm.callbacks.ReduceLROnPlateau(monitor="loss")
    rl.on_epoch_end(0, {"loss": math.inf})
    assert rl.best is None
    with pytest.raises(ValueError, match="monitor"):
        rl.on_epoch_end(0, {"val_loss": 1.0})
