"""Benchmarks: each prints ratios measured in one run, never absolute pass/fail times."""
