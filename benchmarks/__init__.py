"""Benchmarks for obs: each `bench_<name>.py` module prints numbers and ratios from its `main()`.

Run them all with `python -m benchmarks` (what `make bench` does), or one with
`python -m benchmarks.bench_tracing`. Benchmarks are not tests: they print
medians with their baseline side by side from the same run and assert nothing.
"""
