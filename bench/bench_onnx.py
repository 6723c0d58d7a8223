"""Inference: onnxruntime on the exported graph vs fusedmlp's own ``predict`` (issue 18).

The mnist-mlp network (784-256-256-10, ReLU, as ``bench.common.CONFIGS["mnist-mlp"]``) is
exported by ``model.to_onnx``; both sides then run the same batches of 1, 128 and 10000 rows
with the same number of threads (fusedmlp's OpenMP pool; onnxruntime's intra-op pool, one
inter-op thread, sequential execution). Systems:

- ``fusedmlp``: ``model.predict(X)`` (input checks, one forward call per 4096 rows, the
  concatenation of the parts);
- ``fusedmlp-raw``: the Network's ``forward(X, False)`` binding alone (informational: what
  the Python layer costs);
- ``onnxruntime``: ``session.run(None, {"input": X})``, CPU execution provider, all graph
  optimizations on.

Before timing, the outputs must agree to 1e-5 (the export tests' tolerance). Timing is
``bench.common.time_interleaved`` (interleaved blocks, median and inter-quartile range).
Writes ``bench/results/onnx.md`` and ``bench/results/onnx-<machine>.json``.

Run:
    FUSEDMLP_BUILD_DIR=build/bench PYTHONPATH=python:. python -m bench.bench_onnx
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from bench import common

BATCHES = (1, 128, 10000)


def _session(proto, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run(threads: int, batches: tuple[int, ...], seconds: float) -> dict:
    fm = common.import_fm()
    ort = common.try_import("onnxruntime")
    if ort is None or common.try_import("onnx") is None:
        raise SystemExit("bench_onnx: needs onnx and onnxruntime (pip install 'fusedmlp[onnx]')")
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    cfg = common.CONFIGS["mnist-mlp"]
    thread_info = common.set_threads(threads)
    model = fm.MLP(
        n_in=cfg.layers[0],
        hidden=list(cfg.layers[1:-1]),
        n_out=cfg.layers[-1],
        activation=cfg.activation,
        seed=0,
    )
    sess = _session(model.to_onnx(), threads)
    net = model._network()
    rng = np.random.default_rng(1234)
    points = []
    for batch in batches:
        # rotate over batches larger than the last-level cache together (at most 64 of them)
        n = int(min(64, max(2, (32 << 20) // (batch * cfg.layers[0] * 4))))
        Xs = [rng.normal(size=(batch, cfg.layers[0])).astype(np.float32) for _ in range(n)]
        worst = 0.0
        for X in Xs[:2]:
            ref, got = model.predict(X), sess.run(None, {"input": X})[0]
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
            worst = max(worst, float(np.max(np.abs(got - ref))))
        out = [np.empty((batch, model.n_outputs(0)), np.float32)]  # the raw call's output
        steps = {
            "fusedmlp": lambda i, Xs=Xs: model.predict(Xs[i]),
            "fusedmlp-raw": lambda i, Xs=Xs, out=out: net.forward(Xs[i], out),
            "onnxruntime": lambda i, Xs=Xs: sess.run(None, {"input": Xs[i]}),
        }
        common.log(f"batch {batch}: {n} rotating batches, max |onnx - predict| = {worst:.2e}")
        res = common.time_interleaved(
            steps, n, max_s_per_system=seconds, log=common.log, min_block_s=0.05
        )
        points.append({"batch": batch, "n_batches": n, "max_abs_diff": worst, "results": res})
    info = common.machine_info()
    info["loadavg_start"] = load_start
    info["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    info["onnxruntime"] = ort.__version__
    info["onnx"] = sys.modules["onnx"].__version__
    return {
        "config": "mnist-mlp",
        "layers": cfg.layers,
        "threads": thread_info,
        "machine": info,
        "points": points,
    }


def markdown(data: dict) -> str:
    m = data["machine"]
    lines = [
        f"# Inference: onnxruntime vs fusedmlp predict, {data['threads']['requested']} thread(s)",
        "",
        f"mnist-mlp {'-'.join(map(str, data['layers']))} (ReLU, float32, CPU), "
        f"{data['threads']['requested']} thread(s) on both sides; {m['cpu_model']}; "
        f"load average {tuple(m['loadavg_start'])} -> {tuple(m['loadavg_end'])}; "
        f"onnxruntime {m['onnxruntime']}, onnx {m['onnx']}. Median time per call "
        "(inter-quartile range); samples/s from the median. 'ort / fusedmlp' > 1: "
        "fusedmlp's predict is faster. Outputs agree to 1e-5 before timing (max |diff| shown).",
        "",
        "| batch | system | median (us) | IQR (us) | samples/s | ort / this | max abs diff |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for p in data["points"]:
        ort_med = p["results"]["onnxruntime"]["median_s"]
        for name, r in p["results"].items():
            med = r["median_s"]
            lines.append(
                f"| {p['batch']} | {name} | {med * 1e6:.1f} | "
                f"{r['q1_s'] * 1e6:.1f}-{r['q3_s'] * 1e6:.1f} | {p['batch'] / med:,.0f} | "
                f"{ort_med / med:.2f}x | {p['max_abs_diff']:.1e} |"
            )
    lines += [
        "",
        "Command: `python -m bench.bench_onnx` (threads 1 and 2). The machine is shared: "
        "numbers are indicative (see bench/NOTES.md); with more runnable threads than cores, "
        "fusedmlp's OpenMP barriers stall far more than onnxruntime's pool.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--threads", default="1,2", help="thread counts (comma separated), the same for both"
    )
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--seconds", type=float, default=8.0, help="timing budget per system")
    parser.add_argument("--out", default=str(common.RESULTS_DIR / "onnx.md"))
    args = parser.parse_args(argv)
    batches = tuple(int(b) for b in args.batches.split(",") if b)
    runs = [run(int(t), batches, args.seconds) for t in args.threads.split(",") if t]
    common.write_json({"runs": runs}, common.RESULTS_DIR / f"onnx-{common.machine_tag()}.json")
    text = "\n".join(markdown(data) for data in runs)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
