"""Sweeps over the batch size (32 .. 8192) and the hidden width (64 .. 4096) on the CPU.

The base network is a named configuration (default ``mnist-mlp``: 784-256-256-10, ReLU,
cross-entropy, Adam). The batch sweep varies its batch; the width sweep sets every hidden
layer to the width at the base batch. Each point is validated against PyTorch, gets its
GEMM floor, and times the systems side by side (``bench.common.run_point``). Writes
``bench/results/sweep-<machine>.json`` and ``bench/results/sweep.md``; ``--plot`` writes
``sweep-batch.png`` and ``sweep-width.png`` (ms/step per system, the GEMM floor dashed).

Usage::

    python -m bench.bench_sweep --plot
    python -m bench.bench_sweep --sweep batch --batches 32,256,2048 --systems fusedmlp,torch
    python -m bench.bench_sweep --base wide --sweep width --widths 256,1024,4096

Example:
    >>> from bench import bench_sweep
    >>> [c.batch for c in bench_sweep.points("mnist-mlp", "batch", [32, 64], [])]
    [32, 64]
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

DEFAULT_SYSTEMS = ("fusedmlp", "torch", "sklearn")


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
    p.add_argument("--base", default="mnist-mlp", choices=list(C.CONFIGS), help="base config")
    p.add_argument("--sweep", default="both", choices=("batch", "width", "both"))
    p.add_argument("--batches", type=_ints, default=list(C.SWEEP_BATCHES), help="default 32..8192")
    p.add_argument("--widths", type=_ints, default=list(C.SWEEP_WIDTHS), help="default 64..4096")
    p.add_argument(
        "--systems",
        type=lambda s: s.split(","),
        default=list(DEFAULT_SYSTEMS),
        help=f"comma-separated (default {','.join(DEFAULT_SYSTEMS)}; also "
        "fusedmlp-raw, torch-compile: it recompiles per point)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--min-block-ms", type=float, default=20.0)
    p.add_argument("--max-s-per-system", type=float, default=6.0)
    p.add_argument("--no-floor", action="store_true", help="skip the GEMM floor")
    p.add_argument("--plot", action="store_true", help="write PNGs (needs matplotlib)")
    p.add_argument("--quick", action="store_true", help="few repeats: a smoke run")
    p.add_argument("--tag", default=None)
    p.add_argument("--out", type=Path, default=C.RESULTS_DIR)
    args = p.parse_args(argv)
    for name in args.systems:
        if name not in C.ALL_SYSTEMS:
            known = ", ".join(C.ALL_SYSTEMS)
            p.error(f"--systems: unknown system {name!r}; expected some of {known}")
    if args.threads < 1:
        p.error("--threads: expected an integer >= 1")
    if args.quick:
        args.repeats, args.min_block_ms, args.max_s_per_system = 5, 5.0, 1.0
    return args


def points(base: str, sweep: str, batches, widths) -> list[C.Config]:
    """The configurations of one sweep ("batch" or "width")."""
    cfg = C.CONFIGS[base]
    if sweep == "batch":
        return [cfg.with_(name=f"{base}@batch={b}", batch=b) for b in batches]
    return [
        cfg.with_(name=f"{base}@width={w}", layers=(cfg.n_in, *([w] * len(cfg.hidden)), cfg.n_out))
        for w in widths
    ]


def main(argv=None) -> dict:
    args = parse_args(argv)
    C.script_setup()
    C.try_import("torch")
    C.try_import("sklearn")
    threads = C.set_threads(args.threads)
    info = C.machine_info()
    sweeps = ["batch", "width"] if args.sweep == "both" else [args.sweep]
    t0 = time.time()
    data: dict = {"suite": "sweep", "base": args.base, "threads": threads, "machine": info}
    data["sweeps"] = {}
    for sw in sweeps:
        rows = []
        for cfg in points(args.base, sw, args.batches, args.widths):
            C.log(f"[{cfg.name}] {cfg.describe()}")
            r = C.run_point(
                cfg,
                args.systems,
                repeats=args.repeats,
                min_block_s=args.min_block_ms / 1e3,
                max_s_per_system=args.max_s_per_system,
                floor=not args.no_floor,
                floor_repeats=7,
            )
            r["x"] = cfg.batch if sw == "batch" else cfg.hidden[0]
            rows.append(r)
        data["sweeps"][sw] = rows
    info["loadavg_end"] = list(os.getloadavg())
    data["elapsed_s"] = time.time() - t0
    data["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    tag = args.tag or C.machine_tag()
    path = C.write_json(data, args.out / f"sweep-{tag}.json")
    C.log(f"wrote {path}")
    md = render_markdown(data)
    (args.out / "sweep.md").write_text(md)
    print(md)
    if args.plot:
        for sw, rows in data["sweeps"].items():
            png = plot(rows, sw, args.base, args.out / f"sweep-{sw}.png")
            C.log(f"wrote {png}")
    return data


def render_markdown(data: dict) -> str:
    m = data["machine"]
    lines = [
        f"# CPU sweeps (base {data['base']})",
        "",
        f"{m['cpu_model']}, {data['args']['threads']} threads, load average "
        f"{tuple(round(x, 2) for x in m['loadavg_start'])} -> "
        f"{tuple(round(x, 2) for x in m['loadavg_end'])}. Median ms/step; in brackets the "
        "step time over the GEMM floor. 'valid': fusedmlp's losses equal PyTorch's.",
    ]
    for sw, rows in data["sweeps"].items():
        systems = list(data["args"]["systems"])
        lines += ["", f"## {sw}", ""]
        head = f"| {sw} | valid | GEMM floor (ms) | " + " | ".join(systems)
        head += " | torch / fusedmlp |"
        lines += [head, "|" + "---:|" * (len(systems) + 4)]
        for r in rows:
            fl = r.get("floor")
            cells = []
            for s in systems:
                d = r["systems"].get(s, {})
                if "ms" not in d:
                    cells.append("n/a")
                else:
                    x = f" ({d['x_floor']:.2f})" if "x_floor" in d else ""
                    cells.append(C.fmt_ms(d["ms"]) + x)
            val = r.get("validation")
            ok = "n/a" if val is None else "yes" if val["ok"] else "NO"
            ours, tor = r["systems"].get("fusedmlp", {}), r["systems"].get("torch", {})
            ratio = f"{tor['ms'] / ours['ms']:.2f}x" if "ms" in ours and "ms" in tor else "n/a"
            flc = C.fmt_ms(fl["time_s"] * 1e3) if fl else "n/a"
            lines.append(f"| {r['x']} | {ok} | {flc} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], sweep: str, base: str, path: Path) -> Path:
    """ms/step against the swept value, log-log, one line per system (GEMM floor dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = [r["x"] for r in rows]
    names = []
    for r in rows:
        names += [n for n in r["systems"] if n not in names]
    for n in names:
        pts = [(r["x"], r["systems"][n]) for r in rows if "ms" in r["systems"].get(n, {})]
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1]["ms"] for p in pts], marker="o", label=n)
        ax2.plot([p[0] for p in pts], [p[1]["gflops"] for p in pts], marker="o", label=n)
    fl = [(r["x"], r["floor"]) for r in rows if r.get("floor")]
    if fl:
        ax.plot([p[0] for p in fl], [p[1]["time_s"] * 1e3 for p in fl], "k--", label="GEMM floor")
        ax2.plot([p[0] for p in fl], [p[1]["gflops"] for p in fl], "k--", label="GEMM floor")
    for a in (ax, ax2):
        a.set_xscale("log", base=2)
        a.set_xticks(xs)
        a.set_xticklabels([str(x) for x in xs], rotation=45)
        a.set_xlabel("batch size" if sweep == "batch" else "hidden width")
        a.grid(True, which="both", alpha=0.3)
    ax.set_yscale("log")
    ax.set_ylabel("ms per training step (median)")
    ax2.set_ylabel("GFLOP/s (GEMM FLOPs)")
    ax.legend()
    fig.suptitle(f"{base}: {sweep} sweep, CPU")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
