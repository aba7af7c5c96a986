"""Benchmarks: `python3 -m bench` runs them all and prints a table (`--quick` for CI)."""
