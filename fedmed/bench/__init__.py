"""Benchmark results: the JSON contract and the BENCHMARKS.md generated from it."""
