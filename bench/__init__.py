"""Benchmarks of fusedmlp against PyTorch (eager and ``torch.compile``) and scikit-learn.

Every script is runnable as ``python -m bench.<name>`` from the repository root (or as
``python bench/<name>.py``) and writes JSON and Markdown to ``bench/results/``:

- ``bench_configs``: the four named CPU configurations, all systems side by side, the
  targets of issue 8 marked pass/fail.
- ``bench_sweep``: step time over batch sizes and layer widths (``--plot`` writes PNGs).
- ``bench_gpu``: the GPU suite (same names, batches 2^14 .. 2^20); skips without a GPU.
- ``bench_ops``: single kernels (dense forward/backward, activation, loss, Adam) against
  their PyTorch equivalents.
- ``bench_profile``: where the time of one fused step goes (the pieces of the Network
  API and the GEMM floor).

``bench/common.py`` is the one harness they share (DESIGN.md, "Benchmarks").
"""
