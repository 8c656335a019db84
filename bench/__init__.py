"""Benchmarks: `python -m bench.throughput` and the pytest-benchmark micro-benchmarks."""
