"""Hypothesis (written against 6.170, the shared suites' version; the same since 6.0).

Hypothesis's pytest plugin, active wherever Hypothesis is installed, implements
``pytest_terminal_summary``, one of the hooks through which plugins read a run's reports in
the controlling process. Such a reader makes every worker send every report for the collector
to replay (``collector.replay_scope``), which costs tiny tests more than they cost themselves.
But Hypothesis's summary reads only the reports its ``pytest_runtest_makereport`` marked: the
teardown report of a test with statistics (``--hypothesis-show-statistics``) or with failing
examples (the patch it writes). Where it is the only reader, workers send those alone.
"""

from __future__ import annotations

import functools

from ..plugins import plugin_module

_PLUGIN = "_hypothesis_pytestplugin"


def reads_marked_only(impl) -> bool:
    """Whether a hook implementation is Hypothesis's summary, which reads marked reports only."""
    return plugin_module(impl.plugin) == _PLUGIN and impl.function.__name__ == "pytest_terminal_summary"


@functools.lru_cache(maxsize=1)
def _marks() -> tuple:
    """The attributes Hypothesis marks reports with, by its own names where it has them."""
    import sys

    plugin = sys.modules.get(_PLUGIN)
    return (
        getattr(plugin, "STATS_KEY", "_hypothesis_stats"),
        getattr(plugin, "FAILING_EXAMPLES_KEY", "_hypothesis_failing_examples"),
    )


def marked(report) -> bool:
    """Whether Hypothesis's summary reads this report."""
    attributes = report.__dict__
    return any(mark in attributes for mark in _marks())
