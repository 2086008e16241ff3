"""topichub's benchmark harness (``python -m bench``, ``make bench``); docs/benchmarks.md.

Everything runs against real processes on loopback: the server under test pinned to core 0,
the load generator (:mod:`bench.loadgen`, a separate process) pinned to core 1.
"""
