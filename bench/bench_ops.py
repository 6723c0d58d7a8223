"""Single CPU kernels of fusedmlp against their PyTorch equivalents, on the layer shapes of
the named configurations: dense forward (GEMM + bias + activation), dense backward (dZ, db,
dW, dX), activation forward, the fused softmax cross-entropy (loss and gradient), batch norm
forward/backward, dropout and one Adam pass over a parameter arena.

fusedmlp runs through ``fusedmlp.ops`` / ``fusedmlp.optim`` (validated wrappers that
allocate their outputs); PyTorch runs the same arithmetic as explicit tensor operations
(no autograd graph), so both sides allocate their results. Each pair is checked for equal
results (float32 tolerance) before it is timed; pairs are timed interleaved as in the
training-step suite. GFLOP/s (GEMM kernels) or GB/s (elementwise kernels, bytes read +
written once) are reported beside the time. Writes ``bench/results/ops-<machine>.json`` and
``bench/results/ops.md``.

Usage::

    python -m bench.bench_ops                      # every kernel, 2 threads
    python -m bench.bench_ops --kernels dense_forward,adam --threads 1

Example:
    >>> from bench import bench_ops
    >>> sorted(bench_ops.KERNELS)[:2]
    ['activation', 'adam']
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench import common as C  # noqa: E402

#: (batch, n_in, n_out, activation) of the Dense layers the configurations train.
DENSE_SHAPES = [
    (32, 128, 128, "tanh"),
    (128, 784, 256, "relu"),
    (128, 256, 256, "relu"),
    (128, 256, 10, "identity"),
    (512, 1024, 1024, "relu"),
]
ACT_SHAPES = [(32, 128, "tanh"), (128, 256, "relu"), (512, 1024, "relu"), (512, 1024, "tanh")]
LOSS_SHAPES = [(128, 10), (512, 10), (4096, 10)]
BN_SHAPES = [(128, 256), (512, 1024)]
ADAM_SIZES = [50_049, 269_322, 2_109_450]  # parameters of tiny-sin, mnist-mlp, wide
N_ROT = 4


def _torch_act(name: str):
    import torch

    return {"relu": torch.relu, "tanh": torch.tanh, "identity": lambda z: z}[name]


def _check(name: str, ours, theirs, rtol: float = 2e-4, atol: float = 2e-5) -> float:
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(theirs, dtype=np.float64)
    err = float(np.max(np.abs(a - b) / (atol + rtol * np.abs(b)))) if a.size else 0.0
    if not np.isfinite(err) or err > 1.0:
        raise AssertionError(f"{name}: fusedmlp and torch disagree (scaled error {err:.3g})")
    return err


def case_dense_forward(rng):
    import torch

    fm = C.import_fm()
    for b, i, o, act in DENSE_SHAPES:
        Xs = [rng.standard_normal((b, i), dtype=np.float32) for _ in range(N_ROT)]
        W = (rng.standard_normal((i, o), dtype=np.float32) / np.sqrt(i)).astype(np.float32)
        bias = rng.standard_normal(o, dtype=np.float32)
        Xt, Wt, bt = [torch.from_numpy(x) for x in Xs], torch.from_numpy(W), torch.from_numpy(bias)
        f = _torch_act(act)
        _, A = fm.ops.dense_forward(Xs[0], W, bias, act)
        err = _check("dense_forward", A, f(torch.addmm(bt, Xt[0], Wt)).numpy())
        yield {
            "shape": f"{b}x{i} @ {i}x{o} +b, {act}",
            "flops": 2 * b * i * o,
            "check": err,
            "fusedmlp": lambda k, Xs=Xs, W=W, bias=bias, act=act: fm.ops.dense_forward(
                Xs[k % N_ROT], W, bias, act
            ),
            "torch": lambda k, Xt=Xt, Wt=Wt, bt=bt, f=f: f(torch.addmm(bt, Xt[k % N_ROT], Wt)),
        }


def case_dense_backward(rng):
    import torch

    fm = C.import_fm()
    for b, i, o, act in DENSE_SHAPES:
        X = rng.standard_normal((b, i), dtype=np.float32)
        W = (rng.standard_normal((i, o), dtype=np.float32) / np.sqrt(i)).astype(np.float32)
        Z = rng.standard_normal((b, o), dtype=np.float32)
        dAs = [rng.standard_normal((b, o), dtype=np.float32) for _ in range(N_ROT)]
        Xt, Wt, Zt = torch.from_numpy(X), torch.from_numpy(W), torch.from_numpy(Z)
        dAt = [torch.from_numpy(d) for d in dAs]

        def tb(k, act=act, Xt=Xt, Wt=Wt, Zt=Zt, dAt=dAt):
            dA = dAt[k % N_ROT]
            if act == "relu":
                dZ = dA * (Zt > 0)
            elif act == "tanh":
                t = torch.tanh(Zt)
                dZ = dA * (1 - t * t)
            else:
                dZ = dA
            return dZ @ Wt.t(), Xt.t() @ dZ, dZ.sum(0)

        ours = fm.ops.dense_backward(X, W, Z, dAs[0], act)
        dX, dW, db = tb(0)
        err = max(
            _check("dense_backward dX", ours["dX"], dX.numpy()),
            _check("dense_backward dW", ours["dW"], dW.numpy()),
            _check("dense_backward db", ours["db"], db.numpy()),
        )
        yield {
            "shape": f"B={b}, {i}->{o}, {act} (dZ, db, dW, dX)",
            "flops": 4 * b * i * o,
            "check": err,
            "fusedmlp": lambda k, X=X, W=W, Z=Z, dAs=dAs, act=act: fm.ops.dense_backward(
                X, W, Z, dAs[k % N_ROT], act
            ),
            "torch": tb,
        }


def case_activation(rng):
    import torch

    fm = C.import_fm()
    for b, n, act in ACT_SHAPES:
        Zs = [rng.standard_normal((b, n), dtype=np.float32) for _ in range(N_ROT)]
        Zt = [torch.from_numpy(z) for z in Zs]
        f = _torch_act(act)
        err = _check("activation", fm.ops.activation(act, Zs[0]), f(Zt[0]).numpy())
        yield {
            "shape": f"{b}x{n} {act}",
            "bytes": 2 * b * n * 4,
            "check": err,
            "fusedmlp": lambda k, Zs=Zs, act=act: fm.ops.activation(act, Zs[k % N_ROT]),
            "torch": lambda k, Zt=Zt, f=f: f(Zt[k % N_ROT]),
        }


def case_cross_entropy(rng):
    import torch
    import torch.nn.functional as F

    fm = C.import_fm()
    for b, c in LOSS_SHAPES:
        Zs = [rng.standard_normal((b, c), dtype=np.float32) for _ in range(N_ROT)]
        ys = [rng.integers(0, c, b).astype(np.int32) for _ in range(N_ROT)]
        Zt = [torch.from_numpy(z) for z in Zs]
        yt = [torch.from_numpy(y.astype(np.int64)) for y in ys]

        def tl(k, Zt=Zt, yt=yt, b=b):
            z, y = Zt[k % N_ROT], yt[k % N_ROT]
            loss = F.cross_entropy(z, y)
            g = torch.softmax(z, 1)
            g[torch.arange(b), y] -= 1
            return loss, g / b

        lo, go = fm.ops.loss("cross_entropy", Zs[0], ys[0])
        lt, gt = tl(0)
        err = max(_check("loss", [lo], [lt.item()]), _check("loss grad", go, gt.numpy()))
        yield {
            "shape": f"{b}x{c} softmax cross-entropy, loss + grad",
            "bytes": 2 * b * c * 4 + b * 4,
            "check": err,
            "fusedmlp": lambda k, Zs=Zs, ys=ys: fm.ops.loss(
                "cross_entropy", Zs[k % N_ROT], ys[k % N_ROT]
            ),
            "torch": tl,
        }


def case_batchnorm(rng):
    import torch
    import torch.nn.functional as F

    fm = C.import_fm()
    for b, n in BN_SHAPES:
        Xs = [rng.standard_normal((b, n), dtype=np.float32) for _ in range(N_ROT)]
        g, beta = np.ones(n, np.float32), np.zeros(n, np.float32)
        rm, rv = np.zeros(n, np.float32), np.ones(n, np.float32)
        Xt = [torch.from_numpy(x) for x in Xs]
        gt, bt = torch.from_numpy(g.copy()), torch.from_numpy(beta.copy())
        rmt, rvt = torch.zeros(n), torch.ones(n)
        y, _ = fm.ops.batchnorm_forward(Xs[0], g, beta, rm.copy(), rv.copy())
        yt = F.batch_norm(Xt[0], rmt.clone(), rvt.clone(), gt, bt, training=True)
        err = _check("batchnorm_forward", y, yt.numpy())
        yield {
            "shape": f"{b}x{n} forward (training)",
            "bytes": 2 * b * n * 4,
            "check": err,
            "fusedmlp": lambda k, Xs=Xs, g=g, beta=beta, rm=rm, rv=rv: fm.ops.batchnorm_forward(
                Xs[k % N_ROT], g, beta, rm, rv
            ),
            "torch": lambda k, Xt=Xt, gt=gt, bt=bt, rmt=rmt, rvt=rvt: F.batch_norm(
                Xt[k % N_ROT], rmt, rvt, gt, bt, training=True
            ),
        }
        x = Xs[0]
        _, saved = fm.ops.batchnorm_forward(x, g, beta, None, None)
        dys = [rng.standard_normal((b, n), dtype=np.float32) for _ in range(N_ROT)]
        xt = torch.from_numpy(x)
        mean_t = xt.mean(0)
        invstd_t = 1 / torch.sqrt(xt.var(0, unbiased=False) + 1e-5)
        dyt = [torch.from_numpy(d) for d in dys]

        def tbw(k, xt=xt, mean_t=mean_t, invstd_t=invstd_t, gt=gt, dyt=dyt):
            return torch.ops.aten.native_batch_norm_backward(
                dyt[k % N_ROT], xt, gt, None, None, mean_t, invstd_t, True, 1e-5, [True, True, True]
            )

        dx, dg, db = fm.ops.batchnorm_backward(x, dys[0], g, saved)
        tdx, tdg, tdb = tbw(0)
        err = max(
            _check("batchnorm_backward dx", dx, tdx.numpy(), rtol=1e-3, atol=1e-4),
            _check("batchnorm_backward dgamma", dg, tdg.numpy(), rtol=1e-3, atol=1e-4),
            _check("batchnorm_backward dbeta", db, tdb.numpy(), rtol=1e-3, atol=1e-4),
        )
        yield {
            "shape": f"{b}x{n} backward",
            "bytes": 3 * b * n * 4,
            "check": err,
            "fusedmlp": lambda k, x=x, dys=dys, g=g, saved=saved: fm.ops.batchnorm_backward(
                x, dys[k % N_ROT], g, saved
            ),
            "torch": tbw,
        }


def case_dropout(rng):
    import torch
    import torch.nn.functional as F

    fm = C.import_fm()
    for b, n in BN_SHAPES:
        Xs = [rng.standard_normal((b, n), dtype=np.float32) for _ in range(N_ROT)]
        Xt = [torch.from_numpy(x) for x in Xs]
        out = fm.ops.dropout(Xs[0], 0.2, seed=1, step=0, layer=1)
        kept = float(np.mean(out != 0))
        if not 0.75 < kept < 0.85:  # a different RNG than torch's: check the keep rate only
            raise AssertionError(f"dropout: keep rate {kept:.3f}, expected about 0.8")
        yield {
            "shape": f"{b}x{n} rate 0.2 (fusedmlp: Philox; torch: its CPU generator)",
            "bytes": 2 * b * n * 4,
            "check": abs(kept - 0.8),
            "fusedmlp": lambda k, Xs=Xs: fm.ops.dropout(
                Xs[k % N_ROT], 0.2, seed=1, step=k, layer=1
            ),
            "torch": lambda k, Xt=Xt: F.dropout(Xt[k % N_ROT], 0.2, training=True),
        }


def case_adam(rng):
    import torch

    fm = C.import_fm()
    for n in ADAM_SIZES:
        p0 = rng.standard_normal(n, dtype=np.float32)
        gs = [rng.standard_normal(n, dtype=np.float32) for _ in range(N_ROT)]
        # correctness: 3 steps from the same start
        po, pt = p0.copy(), torch.from_numpy(p0.copy()).requires_grad_(False)
        opt_o = fm.optim.Adam(lr=1e-3)
        opt_t = torch.optim.Adam([pt], lr=1e-3, fused=True)
        for k in range(3):
            opt_o.step([po], [gs[k]])
            pt.grad = torch.from_numpy(gs[k])
            opt_t.step()
        err = _check("adam", po, pt.numpy(), rtol=1e-5, atol=1e-6)
        p1, pt1 = p0.copy(), torch.from_numpy(p0.copy())
        opt1 = fm.optim.Adam(lr=1e-3)
        gts = [torch.from_numpy(g) for g in gs]
        impls = {}
        for impl in ("fused", "foreach", "for-loop"):
            t = pt1.clone()
            kw = (
                {"fused": True}
                if impl == "fused"
                else {"foreach": impl == "foreach", "fused": False}
            )
            o = torch.optim.Adam([t], lr=1e-3, **kw)

            def st(k, t=t, o=o, gts=gts):
                t.grad = gts[k % N_ROT]
                o.step()

            impls[impl] = st
        yield {
            "shape": f"{n:,} parameters (one arena), Adam step",
            "bytes": n * 4 * 7,  # read p, g, m, v; write p, m, v
            "check": err,
            "fusedmlp": lambda k, p1=p1, gs=gs, opt1=opt1: opt1.step([p1], [gs[k % N_ROT]]),
            "torch": impls["fused"],
            "torch-foreach": impls["foreach"],
            "torch-for-loop": impls["for-loop"],
        }


KERNELS = {
    "dense_forward": case_dense_forward,
    "dense_backward": case_dense_backward,
    "activation": case_activation,
    "cross_entropy": case_cross_entropy,
    "batchnorm": case_batchnorm,
    "dropout": case_dropout,
    "adam": case_adam,
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--kernels", type=lambda s: s.split(","), default=list(KERNELS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--min-block-ms", type=float, default=10.0)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--tag", default=None)
    p.add_argument("--out", type=Path, default=C.RESULTS_DIR)
    args = p.parse_args(argv)
    for k in args.kernels:
        if k not in KERNELS:
            p.error(f"--kernels: unknown kernel {k!r}; expected some of {', '.join(KERNELS)}")
    if args.quick:
        args.repeats, args.min_block_ms = 5, 3.0
    return args


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    C.script_setup()
    if C.try_import("torch") is None:
        print("bench_ops: skipped: torch is not installed (pip install .[bench])")
        return None
    threads = C.set_threads(args.threads)
    info = C.machine_info()
    rng = np.random.default_rng(0)
    t0 = time.time()
    rows = []
    for kname in args.kernels:
        for case in KERNELS[kname](rng):
            systems = {k: v for k, v in case.items() if k.startswith(("fusedmlp", "torch"))}
            C.log(f"[{kname}] {case['shape']}")
            tm = C.time_interleaved(
                systems,
                N_ROT,
                repeats=args.repeats,
                min_block_s=args.min_block_ms / 1e3,
                warmup_s=0.05,
                max_s_per_system=3.0,
                min_repeats=5,
            )
            row = {"kernel": kname, "shape": case["shape"], "check": case["check"], "systems": {}}
            for sname, t in tm.items():
                d = {"us": t["median_s"] * 1e6, "us_q1": t["q1_s"] * 1e6, "us_q3": t["q3_s"] * 1e6}
                if "flops" in case:
                    d["gflops"] = case["flops"] / t["median_s"] / 1e9
                if "bytes" in case:
                    d["gbs"] = case["bytes"] / t["median_s"] / 1e9
                d["timing"] = t
                row["systems"][sname] = d
            rows.append(row)
            C.log("  " + "  ".join(f"{k} {v['us']:.1f} us" for k, v in row["systems"].items()))
    info["loadavg_end"] = list(os.getloadavg())
    data = {
        "suite": "ops",
        "threads": threads,
        "machine": info,
        "elapsed_s": time.time() - t0,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": rows,
    }
    tag = args.tag or C.machine_tag()
    C.write_json(data, args.out / f"ops-{tag}.json")
    md = render_markdown(data)
    (args.out / "ops.md").write_text(md)
    print(md)
    return data


def render_markdown(data: dict) -> str:
    m = data["machine"]
    lines = [
        "# CPU kernels: fusedmlp.ops vs PyTorch",
        "",
        f"{m['cpu_model']}, {data['args']['threads']} threads, load average "
        f"{tuple(round(x, 2) for x in m['loadavg_start'])} -> "
        f"{tuple(round(x, 2) for x in m['loadavg_end'])}. Median microseconds per call (both "
        "sides allocate their outputs); rate = GFLOP/s for GEMM kernels, GB/s otherwise; "
        "'torch / fusedmlp' > 1: fusedmlp faster. Adam: torch fused (also foreach, for-loop).",
        "",
        "| kernel | shape | fusedmlp (us) | torch (us) | torch / fusedmlp | fusedmlp rate | "
        "torch rate | other torch (us) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in data["rows"]:
        s = r["systems"]
        o, t = s["fusedmlp"], s["torch"]

        def rate(d):
            return f"{d['gflops']:.1f} GF/s" if "gflops" in d else f"{d['gbs']:.1f} GB/s"

        other = ", ".join(f"{k[6:]} {v['us']:.1f}" for k, v in s.items() if k.startswith("torch-"))
        lines.append(
            f"| {r['kernel']} | {r['shape']} | {o['us']:.1f} | {t['us']:.1f} | "
            f"{t['us'] / o['us']:.2f}x | {rate(o)} | {rate(t)} | {other} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
