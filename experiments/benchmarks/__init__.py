"""Benchmarks run by `python -m launch.benchmark --config=configs/bench_*.py`.

Each module has run(config) -> {"title": str, "columns": [...], "rows": [...], ...}; the
launcher prints the rows as a table and writes the whole dict as JSON.
"""
