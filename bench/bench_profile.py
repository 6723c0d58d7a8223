"""Where the time of one fused fusedmlp training step goes, per configuration.

Times the pieces the Network exposes, on the same rotating batches as the suite:

- ``Trainer.train_step`` (what users and the suite time) and the raw ``Network.train_step``
  binding; their difference is the Trainer's Python work (input checks, label conversion),
  also timed alone (``_fast_x`` + ``_targets``);
- ``compute_gradients`` (forward + loss + backward) and ``apply_gradients`` (the optimizer
  pass over the arena): step = gradients + update;
- ``evaluate`` (inference forward + loss);
- the GEMM floor, GEMM by GEMM, so step - floor is the time spent outside the GEMMs.

``--thread-matrix`` also times ``Trainer.train_step`` with the OpenMP threads (elementwise
loops) and the OpenBLAS threads (GEMMs) set separately, 1 or ``--threads`` each, interleaved:
it shows what each thread pool buys, or costs when the two pools compete for the cores.

Only fusedmlp is imported (no peer threads around). ``--loop NAME --seconds S`` just runs
the training step in a loop, for a sampling profiler::

    perf record -F 2000 -g -o perf.data python -m bench.bench_profile --loop mnist-mlp --seconds 10
    perf report -i perf.data --no-children --sort dso,sym

(an unstripped build gives symbol names: configure with ``-DCMAKE_STRIP=/bin/true``).
Writes ``bench/results/profile-<machine>-t<threads>.json`` and
``bench/results/profile-t<threads>.md``.

Example:
    >>> from bench import bench_profile
    >>> bench_profile.parse_args(["--threads", "1"]).threads
    1
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--configs", type=lambda s: s.split(","), default=list(C.CONFIGS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--thread-matrix", action="store_true", help="time omp x blas thread counts")
    p.add_argument("--loop", default=None, help="only run this configuration's step in a loop")
    p.add_argument("--seconds", type=float, default=10.0, help="duration of --loop")
    p.add_argument("--tag", default=None)
    p.add_argument("--out", type=Path, default=C.RESULTS_DIR)
    args = p.parse_args(argv)
    for name in args.configs + ([args.loop] if args.loop else []):
        if name not in C.CONFIGS:
            p.error(f"unknown configuration {name!r}; expected one of {', '.join(C.CONFIGS)}")
    if args.threads < 1:
        p.error("--threads: expected an integer >= 1")
    return args


def pieces(cfg: C.Config, repeats: int) -> dict:
    """Median ms of each piece of the step (timed interleaved) and the GEMM floor."""
    b = C.make_batches(cfg)
    model = C.build_fm_model(cfg)
    trainer = C.build_fm_trainer(cfg, model)
    net, lr, X, y = model._net, cfg.lr, b.X, b.y
    ys = [[t] for t in y]
    # separate models for the pieces that train, so each keeps a sane trajectory
    m2 = C.build_fm_model(cfg)
    C.build_fm_trainer(cfg, m2)
    net2 = m2._net
    steps = {
        "Trainer.train_step": lambda i: trainer.train_step(X[i], y[i]),
        "Network.train_step": lambda i: net.train_step(X[i], ys[i], None, lr),
        "compute_gradients": lambda i: net2.compute_gradients(X[i], ys[i], None),
        "apply_gradients": lambda i: net2.apply_gradients(lr),
        "evaluate (inference fwd + loss)": lambda i: net2.evaluate(X[i], ys[i], None),
        "Trainer input checks": lambda i: (
            trainer._fast_x(X[i]),
            trainer._targets(y[i], cfg.batch),
        ),
    }
    tm = C.time_interleaved(steps, len(b), repeats=repeats, max_s_per_system=8.0, min_repeats=5)
    out = {k: v["median_s"] * 1e3 for k, v in tm.items()}
    floor = C.gemm_floor(cfg)
    return {"ms": out, "timing": tm, "floor": floor}


def thread_matrix(cfg: C.Config, threads: int, repeats: int) -> dict:
    """Median ms of ``Trainer.train_step`` for each (OpenMP threads, OpenBLAS threads) pair."""
    fm = C.import_fm()
    sg = C.Sgemm()
    b = C.make_batches(cfg)
    current = [None]

    def use(omp: int, blas: int) -> None:
        if current[0] != (omp, blas):
            fm.set_num_threads(omp)
            sg.lib.scipy_openblas_set_num_threads(blas)
            current[0] = (omp, blas)

    steps = {}
    for omp in sorted({1, threads}):
        for blas in sorted({1, threads}):
            tr = C.build_fm_trainer(cfg, C.build_fm_model(cfg))

            def step(i, tr=tr, omp=omp, blas=blas):
                use(omp, blas)
                return tr.train_step(b.X[i], b.y[i])

            steps[f"omp={omp},blas={blas}"] = step
    tm = C.time_interleaved(steps, len(b), repeats=repeats, max_s_per_system=6.0, min_repeats=5)
    fm.set_num_threads(threads)
    return {k: {"ms": v["median_s"] * 1e3, "ms_min": v["min_s"] * 1e3} for k, v in tm.items()}


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    fm = C.import_fm()
    threads = C.set_threads(args.threads)
    if args.loop:
        cfg = C.CONFIGS[args.loop]
        b = C.make_batches(cfg)
        trainer = C.build_fm_trainer(cfg, C.build_fm_model(cfg))
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < args.seconds:
            trainer.train_step(b.X[n % len(b)], b.y[n % len(b)])
            n += 1
        dt = time.perf_counter() - t0
        print(f"{cfg.name}: {n} steps, {dt / n * 1e3:.3f} ms/step ({fm.get_num_threads()} threads)")
        return None
    info = C.machine_info()
    results = {}
    for name in args.configs:
        cfg = C.CONFIGS[name]
        C.log(f"[{name}] {cfg.describe()}")
        r = pieces(cfg, args.repeats)
        results[name] = r
        for k, v in r["ms"].items():
            C.log(f"  {k:34s} {v:9.3f} ms")
        C.log(f"  {'GEMM floor':34s} {r['floor']['time_s'] * 1e3:9.3f} ms")
        if args.thread_matrix:
            r["thread_matrix"] = thread_matrix(cfg, args.threads, args.repeats)
            for k, v in r["thread_matrix"].items():
                C.log(f"  {k:34s} {v['ms']:9.3f} ms (min {v['ms_min']:.3f})")
    info["loadavg_end"] = list(os.getloadavg())
    data = {"suite": "profile", "threads": threads, "machine": info, "results": results}
    tag = args.tag or C.machine_tag()
    C.write_json(data, args.out / f"profile-{tag}-t{args.threads}.json")
    md = render_markdown(data, args.threads)
    (args.out / f"profile-t{args.threads}.md").write_text(md)
    print(md)
    return data


def render_markdown(data: dict, threads: int) -> str:
    m = data["machine"]
    lines = [
        "# Where a fusedmlp training step spends its time",
        "",
        f"{m['cpu_model']}, {threads} threads, load average "
        f"{tuple(round(x, 2) for x in m['loadavg_start'])} -> "
        f"{tuple(round(x, 2) for x in m['loadavg_end'])}. Median ms of each piece (timed "
        "interleaved); '% step' relative to Network.train_step.",
    ]
    for name, r in data["results"].items():
        ms = r["ms"]
        step = ms["Network.train_step"]
        lines += [
            "",
            f"## {name} ({C.CONFIGS[name].describe()})",
            "",
            "| piece | ms | % step |",
            "|---|---:|---:|",
        ]
        for k, v in ms.items():
            lines.append(f"| {k} | {C.fmt_ms(v)} | {100 * v / step:.0f}% |")
        fl = r["floor"]
        lines.append(
            f"| GEMM floor (sum of the GEMMs alone) | {C.fmt_ms(fl['time_s'] * 1e3)} | "
            f"{100 * fl['time_s'] * 1e3 / step:.0f}% |"
        )
        lines.append(
            f"| step - floor (outside the GEMMs) | {C.fmt_ms(step - fl['time_s'] * 1e3)} | "
            f"{100 * (step - fl['time_s'] * 1e3) / step:.0f}% |"
        )
        if "thread_matrix" in r:
            lines += [
                "",
                "| threads (Trainer.train_step) | ms (median) | ms (min) |",
                "|---|---:|---:|",
            ]
            for k, v in r["thread_matrix"].items():
                lines.append(f"| {k} | {C.fmt_ms(v['ms'])} | {C.fmt_ms(v['ms_min'])} |")
        lines += ["", "| GEMM | m x n x k | us | GFLOP/s |", "|---|---|---:|---:|"]
        for g in fl["gemms"]:
            lines.append(
                f"| layer {g['layer']} {g['what']} | {g['m']}x{g['n']}x{g['k']} | "
                f"{g['time_s'] * 1e6:.1f} | {g['gflops']:.1f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
