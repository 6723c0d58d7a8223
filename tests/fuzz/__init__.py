"""Hypothesis fuzz of fusedmlp's public API; ``python -m tests.fuzz --calls 40000``."""
