"""Helpers for the tests, the sample data and the benchmarks; not part of the product package (never imported by it)."""
