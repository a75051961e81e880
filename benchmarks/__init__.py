"""Benchmarks for svb_spark, measured side by side in one run."""
