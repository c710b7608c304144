"""Measurement helpers shared by the benchmarks."""
