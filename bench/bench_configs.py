"""The CPU suite of issue 8: the four named configurations, every system side by side.

For each configuration: validate fusedmlp against PyTorch eager (equal losses over 3 steps
from identical weights), measure the GEMM floor, then time fusedmlp, PyTorch eager,
``torch.compile`` and scikit-learn interleaved on the same batches with the same thread
count. Writes ``bench/results/cpu-<machine>.json`` and ``bench/results/cpu.md`` (a table per
configuration and the targets marked pass/fail).

Usage (from the repository root)::

    python -m bench.bench_configs                     # all four configurations, 2 threads
    python -m bench.bench_configs --configs wide --systems fusedmlp,torch --repeats 15
    python bench/bench_configs.py --quick             # short smoke run (not for reporting)

Example:
    >>> from bench import bench_configs
    >>> bench_configs.parse_args(["--configs", "wide"]).configs
    ['wide']
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402

ALL_SYSTEMS = C.ALL_SYSTEMS


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--configs",
        type=lambda s: s.split(","),
        default=list(C.CONFIGS),
        help=f"comma-separated names (default: all of {', '.join(C.CONFIGS)})",
    )
    p.add_argument(
        "--systems",
        type=lambda s: s.split(","),
        default=list(ALL_SYSTEMS),
        help=f"comma-separated systems (default: {','.join(ALL_SYSTEMS)})",
    )
    p.add_argument("--threads", type=int, default=2, help="threads for every system (default 2)")
    p.add_argument("--repeats", type=int, default=30, help="timed samples per system (default 30)")
    p.add_argument(
        "--min-block-ms",
        type=float,
        default=20.0,
        help="each sample times consecutive steps lasting at least this (default 20 ms)",
    )
    p.add_argument(
        "--max-s-per-system",
        type=float,
        default=25.0,
        help="cap on the timed seconds of one system per configuration (default 25)",
    )
    p.add_argument(
        "--compile-mode",
        default="default",
        help="torch.compile mode (default, reduce-overhead, max-autotune-no-cudagraphs)",
    )
    p.add_argument(
        "--no-compile-optimizer",
        action="store_true",
        help="compile only model+loss, run optimizer.step eagerly",
    )
    p.add_argument(
        "--omp-wait-policy",
        choices=("passive", "active"),
        default=None,
        help="set OMP_WAIT_POLICY for every OpenMP runtime in the process (fusedmlp's and "
        "torch's) before they load; the output files get a '-omp-<policy>' suffix. Default: "
        "the environment as the user has it",
    )
    p.add_argument(
        "--wait-idle",
        type=float,
        default=None,
        metavar="BUSY",
        help="before each configuration wait (up to --wait-timeout s) until other processes "
        "keep at most this fraction of the CPUs busy (shared machines), e.g. 0.2",
    )
    p.add_argument("--wait-timeout", type=float, default=600.0)
    p.add_argument("--quick", action="store_true", help="few repeats, short blocks: a smoke run")
    p.add_argument(
        "--tag", default=None, help="machine tag of the JSON file name (default: host name)"
    )
    p.add_argument(
        "--out", type=Path, default=C.RESULTS_DIR, help="output folder (default bench/results)"
    )
    p.add_argument("--no-markdown", action="store_true", help="write the JSON only")
    p.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="JSON",
        help="only re-render the Markdown of an earlier run's JSON (targets re-evaluated)",
    )
    args = p.parse_args(argv)
    for name in args.configs:
        if name not in C.CONFIGS:
            p.error(
                f"--configs: unknown configuration {name!r}; "
                f"expected some of {', '.join(C.CONFIGS)}"
            )
    for name in args.systems:
        if name not in ALL_SYSTEMS:
            p.error(
                f"--systems: unknown system {name!r}; expected some of {', '.join(ALL_SYSTEMS)}"
            )
    if args.threads < 1:
        p.error("--threads: expected an integer >= 1")
    if args.quick:
        args.repeats, args.min_block_ms, args.max_s_per_system = 5, 5.0, 3.0
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.render is not None:
        data = json.loads(args.render.read_text())
        data["targets"] = C.check_targets(data["results"])
        md = render_markdown(data)
        out = args.out / ("cpu" + ("-omp-passive" if "passive" in args.render.name else "") + ".md")
        out.write_text(md)
        C.log(f"wrote {out}")
        return data
    if args.omp_wait_policy:
        if "fusedmlp._core" in sys.modules or "torch" in sys.modules:
            raise RuntimeError(
                "--omp-wait-policy must be set before fusedmlp and torch are imported"
            )
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    C.script_setup()
    C.try_import("torch")  # load the peers before the thread limits are applied
    C.try_import("sklearn")
    threads = C.set_threads(args.threads)
    info = C.machine_info()
    C.log(
        f"{info['cpu_model']}, {info['usable_cpus']} usable CPUs, load {info['loadavg_start']}, "
        f"{args.threads} threads"
    )
    t0 = time.time()
    results = {}
    for name in args.configs:
        cfg = C.CONFIGS[name]
        C.log(f"[{cfg.name}] {cfg.describe()}")
        idle = None
        if args.wait_idle is not None:
            idle = C.wait_for_idle(args.wait_idle, args.wait_timeout)
            C.log(f"  waited {idle['waited_s']} s for an idle machine (busy {idle['busy']:.2f})")
        load0 = os.getloadavg()
        results[name] = C.run_point(
            cfg,
            args.systems,
            repeats=args.repeats,
            min_block_s=args.min_block_ms / 1e3,
            max_s_per_system=args.max_s_per_system,
            compile_mode=args.compile_mode,
            compile_optimizer=not args.no_compile_optimizer,
        )
        results[name]["loadavg"] = [list(load0), list(os.getloadavg())]
        results[name]["wait_idle"] = idle
    info["loadavg_end"] = list(os.getloadavg())
    targets = C.check_targets(results)
    data = {
        "suite": "cpu",
        "threads": threads,
        "machine": info,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "elapsed_s": time.time() - t0,
        "results": results,
        "targets": targets,
    }
    tag = args.tag or C.machine_tag()
    suffix = f"-omp-{args.omp_wait_policy}" if args.omp_wait_policy else ""
    path = C.write_json(data, args.out / f"cpu-{tag}{suffix}.json")
    C.log(f"wrote {path}")
    if not args.no_markdown:
        md = render_markdown(data)
        (args.out / f"cpu{suffix}.md").write_text(md)
        C.log(f"wrote {args.out / f'cpu{suffix}.md'}")
        print(md)
    return data


def render_markdown(data: dict) -> str:
    m = data["machine"]
    lines = [
        "# CPU benchmark: fusedmlp vs PyTorch and scikit-learn",
        "",
        f"Machine: {m['cpu_model']}, {m['usable_cpus']} usable CPUs, caches {m.get('caches')}; "
        f"{data['args']['threads']} threads for every system. Load average at start "
        f"{tuple(round(x, 2) for x in m['loadavg_start'])}, at end "
        f"{tuple(round(x, 2) for x in m['loadavg_end'])}.",
        f"Versions: Python {m['python']}, NumPy {m['numpy']}, fusedmlp {m['fusedmlp']}, "
        f"PyTorch {m.get('torch', 'n/a')}, scikit-learn {m.get('sklearn', 'n/a')}. "
        f"Run {m['time']}. Environment: {m['env'] or 'no OMP_/OPENBLAS_/MKL_ variables set'}.",
        "",
        "Times are medians over interleaved samples (each sample: consecutive steps over rotating",
        "pre-generated batches); IQR in brackets. GFLOP/s counts the GEMM FLOPs of a training step",
        "(2·B·in·out per GEMM, 3 GEMMs per layer, 2 for the first). The GEMM floor is the sum of",
        "the times of each GEMM of the step run alone through the same OpenBLAS with the same",
        "threads; 'floor rate fraction' = floor time / step time. 'time / fusedmlp' > 1 means",
        "fusedmlp is faster.",
        "",
        *(
            [
                f"OMP_WAIT_POLICY={m['env']['OMP_WAIT_POLICY']} applies to every OpenMP runtime in "
                "the process, PyTorch's included (it slows PyTorch's eager step on this machine): "
                "compare fusedmlp here with PyTorch from the default run (cpu.md).",
                "",
            ]
            if "OMP_WAIT_POLICY" in m["env"]
            else []
        ),
        "## Targets (issue 8)",
        "",
        "fusedmlp: as installed (one OpenMP pool on the requested threads runs the elementwise",
        "loops and the GEMM blocks; its OpenBLAS is single-threaded, bench/NOTES.md finding 1).",
        "",
        C.markdown_targets(data["targets"]),
        "",
        "## Configurations",
        "",
    ]
    for name, r in data["results"].items():
        lines.append(C.markdown_config_table(C.CONFIGS[name], r))
        info = [
            f"- {k}: {v['info']}"
            for k, v in r["systems"].items()
            if "info" in v and k != "fusedmlp-raw"
        ]
        lines += ["", *info, ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
