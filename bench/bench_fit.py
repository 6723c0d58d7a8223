"""One ``Trainer.fit`` epoch against a hand-written PyTorch loop (issue 15), and predict /
evaluate throughput against PyTorch ``inference_mode``.

mnist-mlp (784-256-256-10, ReLU, softmax cross-entropy, Adam lr 1e-3, batch 128) on synthetic
60,000 x 784 data (pixels ~ U(0, 1), uniform labels), the same threads everywhere. Systems,
timed interleaved by ``bench.common.time_interleaved`` (one sample = one epoch; median, IQR):

- ``fusedmlp-fit``: ``trainer.fit(X, y, epochs=1, batch_size=128, verbose=0)`` with the
  default ``metrics=("accuracy",)``: shuffling, the fused steps, the running loss and
  accuracy, the end-of-epoch checks, as users get it.
- ``fusedmlp-steps``: (number of steps) x one fused step: ``Network.train_step`` on the
  epoch's batches already cut from a pre-shuffled contiguous copy (no gather, no metrics): the
  floor ``fit`` is measured against.
- ``torch-loop``: the usual hand-written loop: ``torch.randperm`` each epoch, batches by
  index from the tensors, zero_grad / forward / loss / backward / ``torch.optim.Adam`` step,
  the running loss (``loss.item()``) and correct count accumulated as ``fit`` reports them.

Inference on 10,000 rows: ``model.predict`` (logits) and ``trainer.evaluate`` (loss + accuracy)
against the same torch model under ``torch.inference_mode()`` (logits; loss + accuracy).

Targets (issue 15): fit >= 1.8x the torch loop and <= 1.1x the steps; predict >= torch.
Writes ``bench/results/fit-<machine>.json`` and ``bench/results/fit.md``.

Usage::

    PYTHONPATH=/tmp/torchsite:python python -m bench.bench_fit          # 2 threads
    python -m bench.bench_fit --threads 1 --repeats 5 --rows 20000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench import common as C  # noqa: E402

CFG = C.CONFIGS["mnist-mlp"]


def _data(rows: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.random((rows, CFG.n_in), dtype=np.float32)
    y = rng.integers(0, CFG.n_out, rows).astype(np.int32)
    return X, y


def fm_systems(X, y, Xv, yv, threads: int) -> dict:
    fm = C.import_fm()
    model = C.build_fm_model(CFG, seed=0)
    trainer = fm.Trainer(model, loss=CFG.loss, optimizer=fm.optim.Adam(lr=CFG.lr))
    steps_model = C.build_fm_model(CFG, seed=0)
    steps_trainer = C.build_fm_trainer(CFG, steps_model)  # wires the optimizer
    net = steps_model._net
    order = np.random.default_rng(1).permutation(len(X))
    Xs, ys = X[order], y[order]
    batches = [
        (Xs[s : s + CFG.batch], [ys[s : s + CFG.batch]]) for s in range(0, len(X), CFG.batch)
    ]

    def fit(_i: int):
        C._use_threads(threads, threads)
        trainer.fit(X, y, epochs=1, batch_size=CFG.batch, verbose=0)

    def steps(_i: int):
        C._use_threads(threads, threads)
        for xb, yb in batches:
            net.train_step(xb, yb, None, CFG.lr)

    def predict(_i: int):
        C._use_threads(threads, threads)
        model.predict(Xv)

    def evaluate(_i: int):
        C._use_threads(threads, threads)
        trainer.evaluate(Xv, yv)

    steps.keep = steps_trainer
    return {"fit": fit, "steps": steps, "predict": predict, "evaluate": evaluate}


def torch_systems(X, y, Xv, yv, threads: int) -> dict:
    import torch
    import torch.nn.functional as F

    model = C.torch_model(CFG)
    opt = torch.optim.Adam(model.parameters(), lr=CFG.lr)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    Xvt, yvt = torch.from_numpy(Xv), torch.from_numpy(yv.astype(np.int64))
    gen = torch.Generator().manual_seed(0)
    bs = CFG.batch

    def loop(_i: int):
        model.train()
        perm = torch.randperm(len(Xt), generator=gen)
        total, correct = 0.0, 0
        for s in range(0, len(Xt), bs):
            idx = perm[s : s + bs]
            xb, yb = Xt[idx], yt[idx]
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += int((out.argmax(1) == yb).sum())
        return total / len(Xt), correct / len(Xt)

    def predict(_i: int):
        model.eval()
        with torch.inference_mode():
            model(Xvt)

    def evaluate(_i: int):
        model.eval()
        with torch.inference_mode():
            out = model(Xvt)
            return float(F.cross_entropy(out, yvt)), float((out.argmax(1) == yvt).float().mean())

    return {"loop": loop, "predict": predict, "evaluate": evaluate}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=60_000)
    ap.add_argument("--val-rows", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--label", default="", help="a tag recorded in the results (e.g. before)")
    ap.add_argument("--out", default=None, help="the JSON path (default results/fit-<machine>)")
    ap.add_argument("--md", default=None, help="the Markdown path (default results/fit.md)")
    args = ap.parse_args(argv)
    C.script_setup()
    torch = C.try_import("torch")
    if torch is None:
        C.log("bench_fit: torch is not importable; put a CPU torch on PYTHONPATH")
        return 2
    threads = C.set_threads(args.threads)
    X, y = _data(args.rows, 0)
    Xv, yv = _data(args.val_rows, 1)
    f = fm_systems(X, y, Xv, yv, args.threads)
    t = torch_systems(X, y, Xv, yv, args.threads)
    n_steps = -(-args.rows // CFG.batch)
    C.log(f"bench_fit: {args.rows} rows, {n_steps} steps/epoch, {args.threads} threads")
    train = C.time_interleaved(
        {"fusedmlp-fit": f["fit"], "fusedmlp-steps": f["steps"], "torch-loop": t["loop"]},
        1,
        repeats=args.repeats,
        min_repeats=args.repeats,
        warmup_s=0.5,
        min_block_s=0.0,
        max_s_per_system=120.0,
        log=C.log,
    )
    infer = C.time_interleaved(
        {
            "fusedmlp-predict": f["predict"],
            "torch-predict": t["predict"],
            "fusedmlp-evaluate": f["evaluate"],
            "torch-evaluate": t["evaluate"],
        },
        1,
        repeats=max(args.repeats, 15),
        min_block_s=0.05,
        log=C.log,
    )
    ms = {k: v["median_s"] * 1e3 for k, v in {**train, **infer}.items()}
    ratios = {
        "torch-loop / fit": ms["torch-loop"] / ms["fusedmlp-fit"],
        "fit / steps": ms["fusedmlp-fit"] / ms["fusedmlp-steps"],
        "torch predict / fusedmlp predict": ms["torch-predict"] / ms["fusedmlp-predict"],
        "torch evaluate / fusedmlp evaluate": ms["torch-evaluate"] / ms["fusedmlp-evaluate"],
    }
    targets = [
        ("torch-loop / fit", ">=", 1.8),
        ("fit / steps", "<=", 1.1),
        ("torch predict / fusedmlp predict", ">=", 1.0),
        ("torch evaluate / fusedmlp evaluate", ">=", 1.0),
    ]
    checks = [
        {
            "ratio": k,
            "target": f"{op} {val}",
            "measured": ratios[k],
            "pass": ratios[k] >= val if op == ">=" else ratios[k] <= val,
        }
        for k, op, val in targets
    ]
    result = {
        "label": args.label,
        "config": CFG.to_dict(),
        "rows": args.rows,
        "val_rows": args.val_rows,
        "steps_per_epoch": n_steps,
        "threads": threads,
        "torch_version": torch.__version__,
        "machine": C.machine_info(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "timings": {**train, **infer},
        "ms": ms,
        "ratios": ratios,
        "targets": checks,
    }
    out = Path(args.out) if args.out else C.RESULTS_DIR / f"fit-{C.machine_tag()}.json"
    C.write_json(result, out)
    lines = [
        f"### fit epoch and inference, mnist-mlp ({args.rows} x {CFG.n_in}, batch {CFG.batch}, "
        f"{args.threads} threads){' - ' + args.label if args.label else ''}",
        "",
        "| system | median ms | IQR ms | per row / per step |",
        "|---|---:|---:|---:|",
    ]
    for k, v in {**train, **infer}.items():
        per = (
            f"{v['median_s'] / n_steps * 1e6:.0f} us/step"
            if k in train
            else f"{args.val_rows / v['median_s'] / 1e6:.2f} M rows/s"
        )
        lines.append(
            f"| {k} | {C.fmt_ms(v['median_s'] * 1e3)} | "
            f"{C.fmt_ms(v['q1_s'] * 1e3)}-{C.fmt_ms(v['q3_s'] * 1e3)} | {per} |"
        )
    lines += ["", "| ratio | target | measured | pass |", "|---|---|---:|---|"]
    for c in checks:
        lines.append(f"| {c['ratio']} | {c['target']} | {c['measured']:.2f} | {c['pass']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    md = Path(args.md) if args.md else C.RESULTS_DIR / "fit.md"
    md.write_text(text)
    C.log(f"bench_fit: wrote {out} and {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
