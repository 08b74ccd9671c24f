"""Shims for third-party plugins (and pytest's own junitxml) that behave differently, or
wrongly, unless the run looks to them as it does under pytest-xdist. One module per plugin;
each docstring names the version it was written against and why the shim is needed, so a
new release of the plugin can be checked against it.

  cov             pytest-cov: coverage measured in workers, combined in the collector
  hypothesis      Hypothesis: its summary reads only the reports it marked; only those replayed
  randomly        pytest-randomly: every worker shuffles with the collector's seed
  rerunfailures   pytest-rerunfailures: reruns logged as in xdist's workers; its flaky mark
  junitxml        pytest's junitxml: each test's <testcase> built in its worker
  syrupy          syrupy: snapshot usage reported once, from the processes that ran tests
  benchmark       pytest-benchmark: one "xdist is active" warning; its table from the worker
  sugar           pytest-sugar: its status answers are for its own reporter
"""
