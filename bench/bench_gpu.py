"""The GPU suite: the named configurations at large batches (2^14 .. 2^20) on one GPU.

Systems: PyTorch eager on the GPU, ``torch.compile`` of the same step (``--systems`` to add
it), and fusedmlp when its CUDA backend is available (``fm.cuda_available()``) and the model
accepts ``device="cuda"`` (inputs are CuPy views of the same device memory, no copy). Each
of fusedmlp's points is validated against PyTorch first (equal losses over 3 steps from
identical weights; dropout with fusedmlp's own Philox masks). Times come from CUDA events:
a sample is ``inner`` consecutive steps between two events, the device synchronized before
the closing event (so work on any stream, CuPy's included, is counted); median and IQR over
interleaved samples. The GEMM floor is the sum of the step's GEMMs timed alone through
``torch.mm`` (cuBLAS) with the same TF32 setting. Writes ``bench/results/gpu-<machine>.json``
and ``bench/results/gpu.md``.

Without torch, CUDA or a GPU it prints why and exits 0 (it skips, it never fails).
``--device cpu`` runs the same code on the CPU with the host clock: a dry run of the
harness on a machine without a GPU (small batches, not a benchmark).

Usage::

    python -m bench.bench_gpu                          # all configurations, 2^14 .. 2^20
    python -m bench.bench_gpu --configs wide --batches 16384,65536 --systems torch,fusedmlp
    python -m bench.bench_gpu --device cpu --batches 256 --quick   # harness dry run

Example:
    >>> from bench import bench_gpu
    >>> bench_gpu.parse_args(["--batches", "16384"]).batches
    [16384]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench import common as C  # noqa: E402

GPU_SYSTEMS = ("fusedmlp", "torch", "torch-compile")

#: GPU-only configurations beside bench/common.py's: a tiny-cuda-nn-style network (4 hidden
#: layers of width 64), the regime where fully fused GPU MLPs shine and launch overhead rules.
GPU_CONFIGS: dict[str, C.Config] = {
    **C.CONFIGS,
    "tcnn-64": C.Config("tcnn-64", (64, 64, 64, 64, 64, 16), 262144, "relu", "mse"),
}


def _ints(s: str) -> list[int]:
    try:
        vals = [int(x) for x in s.split(",") if x]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from exc
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {s!r}")
    return vals


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--configs", type=lambda s: s.split(","), default=list(GPU_CONFIGS))
    p.add_argument("--adam-params", type=int, default=1 << 26, help="0: skip the Adam pass")
    p.add_argument("--batches", type=_ints, default=list(C.GPU_BATCHES), help="default 2^14..2^20")
    p.add_argument("--systems", type=lambda s: s.split(","), default=["fusedmlp", "torch"])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--min-block-ms", type=float, default=20.0)
    p.add_argument("--max-s-per-system", type=float, default=10.0)
    p.add_argument("--compile-mode", default="max-autotune-no-cudagraphs")
    p.add_argument("--tf32", action="store_true", help="allow TF32 in torch's float32 GEMMs")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a dry run")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--tag", default=None)
    p.add_argument("--out", type=Path, default=C.RESULTS_DIR)
    args = p.parse_args(argv)
    for name in args.configs:
        if name not in GPU_CONFIGS:
            p.error(
                f"--configs: unknown configuration {name!r}; expected some of {list(GPU_CONFIGS)}"
            )
    for name in args.systems:
        if name not in GPU_SYSTEMS:
            p.error(f"--systems: unknown system {name!r}; expected some of {GPU_SYSTEMS}")
    if args.quick:
        args.repeats, args.min_block_ms, args.max_s_per_system = 5, 5.0, 2.0
    return args


def skip_reason(device: str) -> str | None:
    """Why the GPU suite cannot run here (None when it can)."""
    torch = C.try_import("torch")
    if torch is None:
        return "torch is not installed (pip install .[bench])"
    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    return None


class CudaClock:
    """CUDA-event clock: an event before the steps, the device synchronized (every stream),
    then the closing event; ``stop()`` returns the events' elapsed seconds."""

    name = "torch.cuda.Event (device synchronized before the closing event)"

    def __init__(self):
        import torch

        self.torch = torch
        self.e0 = torch.cuda.Event(enable_timing=True)
        self.e1 = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        self.torch.cuda.synchronize()
        self.e0.record()

    def stop(self) -> float:
        self.torch.cuda.synchronize()
        self.e1.record()
        self.e1.synchronize()
        return self.e0.elapsed_time(self.e1) / 1e3


class DeviceBatches:
    """Batches generated on the device by torch; fusedmlp sees CuPy views of the same memory
    (int32 labels for its cross-entropy). Fewer batches rotate than on the CPU: one input of
    these sizes already exceeds the GPU's L2 cache."""

    def __init__(self, cfg: C.Config, device: str, max_bytes: int = 1 << 30, seed: int = 1234):
        import torch

        per = cfg.batch * cfg.n_in * 4
        n = int(max(1, min(4, max_bytes // max(per, 1))))
        g = torch.Generator(device=device).manual_seed(seed)
        self.X, self.y, self.y_fm = [], [], []
        for _ in range(n):
            if cfg.loss == "mse" and cfg.n_in == 1:
                x = (torch.rand(cfg.batch, 1, device=device, generator=g) * 2 - 1) * math.pi
                t = torch.sin(x).repeat(1, cfg.n_out)
            else:
                if cfg.n_in == 784:
                    x = torch.rand(cfg.batch, cfg.n_in, device=device, generator=g)
                else:
                    x = torch.randn(cfg.batch, cfg.n_in, device=device, generator=g)
                if cfg.loss == "cross_entropy":
                    t = torch.randint(0, cfg.n_out, (cfg.batch,), device=device, generator=g)
                else:
                    t = torch.randn(cfg.batch, cfg.n_out, device=device, generator=g)
            self.X.append(x.contiguous())
            self.y.append(t.contiguous())
            self.y_fm.append(t.to(torch.int32).contiguous() if t.dtype == torch.int64 else t)

    def __len__(self) -> int:
        return len(self.X)

    def for_fm(self, device: str):
        """fusedmlp's inputs: CuPy views (cuda) or NumPy views (cpu dry run)."""
        if device == "cpu":
            return [x.numpy() for x in self.X], [t.numpy() for t in self.y_fm]
        import cupy

        return [cupy.asarray(x) for x in self.X], [cupy.asarray(t) for t in self.y_fm]


def _to_numpy(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def fm_gpu_model(cfg: C.Config, device: str):
    """fusedmlp's model on ``device``; raises with fusedmlp's reason when it cannot."""
    fm = C.import_fm()
    if device == "cuda" and not fm.cuda_available():
        raise RuntimeError(f"fusedmlp CUDA backend unavailable: {fm.cuda_unavailable_reason()}")
    return fm.MLP(
        n_in=cfg.n_in,
        hidden=list(cfg.hidden),
        n_out=cfg.n_out,
        activation=cfg.activation,
        batchnorm=cfg.batchnorm,
        dropout=cfg.dropout,
        seed=0,
        device=device,
    )


def validate_device(cfg: C.Config, db: DeviceBatches, device: str, k: int = 3, rtol: float = 1e-4):
    """fusedmlp vs torch on the device: k steps from identical weights, equal losses."""
    import torch

    model = fm_gpu_model(cfg, device)
    trainer = C.build_fm_trainer(cfg, model)
    weights = [_to_numpy(w) for w in model.get_weights()]
    tmodel = C.torch_model(cfg, weights, dropout="mask", device=device)
    opt = torch.optim.Adam(tmodel.parameters(), lr=cfg.lr)
    loss_fn = C.torch_loss_fn(cfg)
    masks_at = [m for m in tmodel if type(m).__name__ == "MaskMul"]
    Xf, yf = db.for_fm(device)
    ours, theirs = [], []
    for s in range(k):
        i = s % len(db)
        masks = C.fm_dropout_masks(cfg, model, s, cfg.batch)
        for m, mask in zip(masks_at, masks, strict=True):
            m.mask = torch.from_numpy(mask).to(device)
        ours.append(float(trainer.train_step(Xf[i], yf[i])))
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(tmodel(db.X[i]), db.y[i])
        loss.backward()
        opt.step()
        theirs.append(float(loss.item()))
    rel = max(abs(a - b) / max(abs(b), 1e-30) for a, b in zip(ours, theirs, strict=True))
    return {
        "ok": bool(rel <= rtol),
        "rtol": rtol,
        "losses_fusedmlp": ours,
        "losses_torch": theirs,
        "max_rel_loss_diff": rel,
        "what": f"{k} training steps from identical weights on the device",
    }


def gemm_floor_torch(cfg: C.Config, device: str, clock, repeats: int = 10) -> dict:
    """The step's GEMMs timed alone through ``torch.mm`` (cuBLAS on the GPU), summed."""
    import torch

    rows, cache = [], {}
    for g in C.gemm_list(cfg):
        key = (g["ta"], g["tb"], g["m"], g["n"], g["k"])
        if key not in cache:
            ta, tb, m, n, kk = key
            A = torch.randn((kk, m) if ta else (m, kk), device=device)
            B = torch.randn((n, kk) if tb else (kk, n), device=device)
            Aop, Bop = (A.t() if ta else A), (B.t() if tb else B)
            out = torch.empty(m, n, device=device)

            def f(Aop=Aop, Bop=Bop, out=out):
                torch.mm(Aop, Bop, out=out)

            for _ in range(3):
                f()
            clock.start()
            f()
            est = max(clock.stop(), 1e-7)
            inner = max(1, math.ceil(0.01 / est))
            samples = []
            for _ in range(repeats):
                clock.start()
                for _ in range(inner):
                    f()
                samples.append(clock.stop() / inner)
            cache[key] = C.summarize(samples, inner)["median_s"]
            del A, B, out
        t = cache[key]
        rows.append({**g, "time_s": t, "tflops": 2 * g["m"] * g["n"] * g["k"] / t / 1e12})
    total = sum(r["time_s"] for r in rows)
    return {
        "time_s": total,
        "tflops": C.training_flops(cfg) / total / 1e12,
        "gemms": rows,
        "method": "torch.mm of each GEMM shape alone, summed",
    }


def run_point(cfg: C.Config, args, clock) -> dict:
    import torch

    device = args.device
    res: dict = {"config": cfg.to_dict(), "training_flops": C.training_flops(cfg), "systems": {}}
    try:
        db = DeviceBatches(cfg, device)
    except torch.cuda.OutOfMemoryError as exc:
        res["error"] = f"out of memory generating the batches: {exc}"
        return res
    res["n_rotating_batches"] = len(db)
    res["floor"] = gemm_floor_torch(cfg, device, clock, repeats=5 if args.quick else 10)
    C.log(
        f"  GEMM floor {res['floor']['time_s'] * 1e3:.3f} ms ({res['floor']['tflops']:.1f} TFLOP/s)"
    )
    steps, errors, infos = {}, {}, {}
    weights = None
    if "fusedmlp" in args.systems:
        try:
            res["validation"] = validate_device(cfg, db, device)
            model = fm_gpu_model(cfg, device)
            trainer = C.build_fm_trainer(cfg, model)
            weights = [_to_numpy(w) for w in model.get_weights()]
            Xf, yf = db.for_fm(device)

            def fm_step(i, trainer=trainer, Xf=Xf, yf=yf):
                # no per-step host sync (torch's loop does not .item() either)
                return trainer.train_step(Xf[i], yf[i], sync=device != "cuda")

            steps["fusedmlp"] = fm_step
            infos["fusedmlp"] = {
                "api": "fm.Trainer.train_step(sync=False): CUDA graph replay",
                "valid": res["validation"]["ok"],
            }
        except Exception as exc:
            errors["fusedmlp"] = f"{type(exc).__name__}: {exc}"
    if weights is None:
        weights = [_to_numpy(w) for w in C.build_fm_model(cfg).get_weights()]
    fake = C.Batches([], [])
    fake.X_torch, fake.y_torch = db.X, db.y
    fake.X = [None] * len(db)
    for name in ("torch", "torch-compile"):
        if name not in args.systems:
            continue
        try:
            if name == "torch":
                s = C.torch_system(cfg, fake, weights, device=device)
            else:
                s = C.torch_compile_system(
                    cfg, fake, weights, mode=args.compile_mode, device=device
                )
            steps[name], infos[name] = s.step, s.info
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
    for name, e in errors.items():
        C.log(f"  {name}: not timed ({e})")
    try:
        timings = C.time_interleaved(
            steps,
            len(db),
            repeats=args.repeats,
            min_block_s=args.min_block_ms / 1e3,
            max_s_per_system=args.max_s_per_system,
            clock=clock,
            log=C.log,
        )
    except torch.cuda.OutOfMemoryError as exc:
        res["error"] = f"out of memory while timing: {exc}"
        return res
    for name in args.systems:
        if name in errors:
            res["systems"][name] = {"error": errors[name]}
            continue
        t = timings[name]
        d = {
            "ms": t["median_s"] * 1e3,
            "ms_q1": t["q1_s"] * 1e3,
            "ms_q3": t["q3_s"] * 1e3,
            "ms_min": t["min_s"] * 1e3,
            "samples_per_s": cfg.batch / t["median_s"],
            "tflops": C.training_flops(cfg) / t["median_s"] / 1e12,
            "floor_fraction": res["floor"]["time_s"] / t["median_s"],
            "timing": t,
            "info": infos[name],
        }
        res["systems"][name] = d
        C.log(
            f"  {name:14s} {d['ms']:9.3f} ms  {d['tflops']:.2f} TFLOP/s  "
            f"floor frac {d['floor_fraction']:.2f}"
        )
    return res


def adam_bandwidth(n: int, clock, repeats: int = 20) -> dict:
    """The fused Adam pass over one arena of ``n`` float32 parameters against the measured
    device-to-device copy bandwidth. Adam reads p, g, m, v and writes p, m, v: 28 bytes per
    parameter; a copy of B bytes moves 2B (read + write)."""
    import cupy

    fm = C.import_fm()
    rng = cupy.random.default_rng(0)
    p = rng.standard_normal(n, dtype=cupy.float32)
    g = rng.standard_normal(n, dtype=cupy.float32)
    opt = fm.optim.Adam(lr=1e-3)
    src = cupy.empty(7 * n, cupy.float32)
    dst = cupy.empty_like(src)

    def timed(f):
        for _ in range(3):
            f()
        samples = []
        for _ in range(repeats):
            clock.start()
            f()
            samples.append(clock.stop())
        return float(np.median(samples))

    t_adam = timed(lambda: opt.step([p], [g]))
    t_copy = timed(lambda: dst.__setitem__(slice(None), src))  # 28n bytes read + 28n written
    bw_adam = 28 * n / t_adam
    bw_copy = 2 * 28 * n / t_copy
    return {
        "n_params": n,
        "adam_ms": t_adam * 1e3,
        "adam_GBps": bw_adam / 1e9,
        "copy_GBps": bw_copy / 1e9,
        "fraction_of_copy": bw_adam / bw_copy,
        "method": "fm.optim.Adam.step on one CuPy arena (28 B/param) vs cupy copy of 28n bytes",
    }


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    C.script_setup()
    reason = skip_reason(args.device)
    if reason:
        print(f"bench_gpu: skipped: {reason}")
        return None
    import torch

    torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    torch.backends.cudnn.allow_tf32 = bool(args.tf32)
    clock = CudaClock() if args.device == "cuda" else C.PerfClock()
    info = C.machine_info()
    if args.device == "cuda":
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = {
            "name": p.name,
            "memory_gib": round(p.total_memory / 2**30, 1),
            "sm_count": p.multi_processor_count,
            "capability": f"{p.major}.{p.minor}",
            "cuda": torch.version.cuda,
        }
    fm = C.import_fm()
    info["fm_cuda_available"] = fm.cuda_available()
    info["fm_cuda_reason"] = fm.cuda_unavailable_reason()
    t0 = time.time()
    results: dict = {}
    tag = args.tag or C.machine_tag()
    suffix = "" if args.device == "cuda" else "-dryrun-cpu"

    def write() -> dict:
        # written after every point, so a run stopped at its time limit keeps what it measured
        data = {
            "suite": "gpu",
            "device": args.device,
            "clock": clock.name,
            "tf32": bool(args.tf32),
            "machine": info,
            "elapsed_s": time.time() - t0,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "results": results,
        }
        C.write_json(data, args.out / f"gpu{suffix}-{tag}.json")
        (args.out / f"gpu{suffix}.md").write_text(render_markdown(data))
        return data

    if args.device == "cuda" and args.adam_params > 0:
        try:
            results["adam-pass"] = {"adam": adam_bandwidth(args.adam_params, clock)}
            C.log(f"[adam-pass] {results['adam-pass']['adam']}")
        except Exception as exc:
            results["adam-pass"] = {"error": f"{type(exc).__name__}: {exc}"}
            C.log(f"  adam pass failed: {results['adam-pass']['error']}")
        write()
    for name in args.configs:
        for b in args.batches:
            cfg = GPU_CONFIGS[name].with_(batch=b)
            key = f"{name}@{b}"
            C.log(f"[{key}] {cfg.describe()}")
            try:
                results[key] = run_point(cfg, args, clock)
            except Exception as exc:  # one point failing (memory, a driver error) is recorded
                results[key] = {"config": cfg.to_dict(), "error": f"{type(exc).__name__}: {exc}"}
                C.log(f"  failed: {results[key]['error']}")
            if args.device == "cuda":
                torch.cuda.empty_cache()
            write()
    data = write()
    C.log(f"wrote {args.out / f'gpu{suffix}-{tag}.json'}")
    print(render_markdown(data))
    return data
    return data


def render_markdown(data: dict) -> str:
    m = data["machine"]
    gpu = m.get("gpu", {})
    lines = [
        "# GPU benchmark: fusedmlp vs PyTorch",
        "",
        f"Device: {gpu.get('name', data['device'])} ({gpu}); "
        f"TF32 {'on' if data['tf32'] else 'off'}; "
        f"clock: {data['clock']}. fusedmlp CUDA: "
        f"{'available' if m['fm_cuda_available'] else m['fm_cuda_reason']}.",
        "",
        "| config | batch | GEMM floor (ms) | system | ms/step | IQR (ms) | samples/s | TFLOP/s "
        "| floor rate fraction | torch / system |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, r in data["results"].items():
        if key == "adam-pass":
            continue
        name, b = key.split("@")
        if "error" in r and not r.get("systems"):
            lines.append(f"| {name} | {b} | | | n/a | | | | | {r['error'][:80]} |")
            continue
        fl = C.fmt_ms(r["floor"]["time_s"] * 1e3) if r.get("floor") else "n/a"
        ref = r["systems"].get("torch", {}).get("ms")
        for sname, d in r["systems"].items():
            if "ms" not in d:
                lines.append(f"| {name} | {b} | {fl} | {sname} | n/a | | | | | {d['error'][:80]} |")
                continue
            ratio = f"{ref / d['ms']:.2f}x" if ref else ""
            lines.append(
                f"| {name} | {b} | {fl} | {sname} | {C.fmt_ms(d['ms'])} | "
                f"{C.fmt_ms(d['ms_q1'])}-{C.fmt_ms(d['ms_q3'])} | {d['samples_per_s']:,.0f} | "
                f"{d['tflops']:.2f} | {d['floor_fraction']:.2f} | {ratio} |"
            )
    ad = data["results"].get("adam-pass")
    if ad:
        if "adam" in ad:
            a = ad["adam"]
            lines += [
                "",
                f"Fused Adam over {a['n_params']:,} float32 parameters: {a['adam_ms']:.3f} ms, "
                f"{a['adam_GBps']:.0f} GB/s = {a['fraction_of_copy']:.0%} of the measured copy "
                f"bandwidth ({a['copy_GBps']:.0f} GB/s).",
            ]
        else:
            lines += ["", f"Fused Adam pass: {ad['error']}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    main()
