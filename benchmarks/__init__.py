"""Benchmarks of edgecache against nginx `proxy_cache` and direct Glance, in one run.

`python -m benchmarks [--quick]` starts a synthetic Glance, edgecache and nginx on loopback,
runs every scenario against each of them in turn and reports medians, spreads and ratios.
"""
