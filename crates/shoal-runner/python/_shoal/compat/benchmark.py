"""pytest-benchmark (written against 5.3, as in requirements-plugins.txt).

pytest-benchmark disables itself under xdist (``config.option.dist`` other than ``no``) and
warns "disabled because xdist plugin is active" from the process that noted a benchmark test
while collecting: under xdist gw0 alone, under shoal the collector, whose note forked workers
inherit (and spawned gw0 makes again). Under ``-n 0`` it runs, and keeps its results (the
table its terminal summary prints) in the process that ran the tests: shoal's worker, whose
summary is then forwarded.
"""

from __future__ import annotations

#: Plugins whose terminal summary only the process that ran the tests can print.
WORKER_SUMMARIES = ("pytest_benchmark",)


def one_warning(config) -> None:
    """The collector's warning is the one printed, so a worker forgets its own."""
    benchmarks = getattr(config, "_benchmarksession", None)
    if benchmarks is not None and hasattr(benchmarks, "xdist_benchmark_found"):
        benchmarks.xdist_benchmark_found = False
