"""Hypothesis (written against 6.170, the shared suites' version; the same since 6.0).

Hypothesis's pytest plugin, active wherever Hypothesis is installed, implements
``pytest_terminal_summary``, one of the hooks through which plugins read a run's reports in
the controlling process. Such a reader makes every worker send every report for the collector
to replay (``collector.replay_scope``), which costs tiny tests more than they cost themselves.
But Hypothesis's summary reads only the reports its ``pytest_runtest_makereport`` marked: the
teardown report of a test with statistics (``--hypothesis-show-statistics``) or with failing
examples (the patch it writes). Where it is the only reader, workers send those alone.

In a worker of a distributed run the same summary would print, to nothing, the statistics of
that worker's tests (the collector prints every worker's, from the reports replayed to it),
write the failing examples' patch a second time, and import all of Hypothesis to do so, which
delays the end of every worker by about a third of a second on two cores. It is taken off
those workers' hook; under ``-n 0`` the one worker is plain pytest and keeps it.

The collector's summary imports all of Hypothesis too (its plugin imports nothing of it
before, even where no test uses it), a third of a second of CPU, to look for observations
written in that process, where no test runs. Where it has nothing else to print (no statistics
asked for, no failing example among the reports), it is taken off the collector's hook too;
where it prints statistics, the collector makes the import while the workers run the tests,
when it would only wait, so that the run's end does not.
"""

from __future__ import annotations

import functools
import sys
import warnings

from ..plugins import plugin_module

_PLUGIN = "_hypothesis_pytestplugin"


def reads_marked_only(impl) -> bool:
    """Whether a hook implementation is Hypothesis's summary, which reads marked reports only."""
    return plugin_module(impl.plugin) == _PLUGIN and impl.function.__name__ == "pytest_terminal_summary"


@functools.lru_cache(maxsize=1)
def _marks() -> tuple:
    """The attributes Hypothesis marks reports with, by its own names where it has them."""
    plugin = sys.modules.get(_PLUGIN)
    return (
        getattr(plugin, "STATS_KEY", "_hypothesis_stats"),
        getattr(plugin, "FAILING_EXAMPLES_KEY", "_hypothesis_failing_examples"),
    )


def _shows_statistics(config) -> bool:
    """Whether the run asked Hypothesis for its statistics section."""
    option = getattr(sys.modules.get(_PLUGIN), "PRINT_STATISTICS_OPTION", "--hypothesis-show-statistics")
    return bool(config.getoption(option, False))


def summary_imports(config):
    """Where Hypothesis's summary will print statistics in the collector: a function that makes
    the import it makes (``hypothesis.internal.observability``, and with it all of Hypothesis),
    for the collector to call while it waits for the workers; else None. An import that raises
    is left for the summary's own, which raises again where pytest reports it; warnings the
    import makes are ignored, as the collector's loop has no test to charge them to."""
    if not _shows_statistics(config):
        return None
    if not any(reads_marked_only(impl) for impl in config.hook.pytest_terminal_summary.get_hookimpls()):
        return None

    def import_ahead() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                import hypothesis.internal.observability  # noqa: F401
            except Exception:
                pass

    return import_ahead


def no_summary_here(config) -> None:
    """Takes Hypothesis's summary off this process's ``pytest_terminal_summary``: a
    distributed worker's, or a collector's where it would print nothing."""
    hook = config.hook.pytest_terminal_summary
    for impl in hook.get_hookimpls():
        if reads_marked_only(impl):
            hook._remove_plugin(impl.plugin)  # pluggy's own, see _shoal/__init__.py


def marked(report) -> bool:
    """Whether Hypothesis's summary reads this report."""
    attributes = report.__dict__
    return any(mark in attributes for mark in _marks())


def no_empty_summary_in_collector(config, stats: dict) -> None:
    """Takes Hypothesis's summary off the finished collector's hook where all it would do is
    import Hypothesis: no statistics asked for, no failing example among the reports replayed
    to the collector (``stats``), and no observations written in it (it runs no tests, and
    Hypothesis's observability module, which lists them, is not even imported)."""
    if _shows_statistics(config) or "hypothesis.internal.observability" in sys.modules:
        return
    failing = _marks()[1]
    if any(failing in getattr(report, "__dict__", {}) for reports in stats.values() for report in reports):
        return
    no_summary_here(config)
