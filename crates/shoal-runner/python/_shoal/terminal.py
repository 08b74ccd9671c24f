"""The controller owns the terminal: workers and the finished collector print nothing of
their own, while other plugins' terminal summaries still run and are forwarded."""

from __future__ import annotations

import io
import sys

import pytest

from .compat import benchmark, junitxml
from .plugins import plugin_package
from .report import warning_reports


def silence(config, width: int | None = None) -> None:
    """Workers and the finished collector print nothing: the controller owns the terminal.
    pytest's internal errors, which its reporter would print, go to stderr instead.

    ``width`` is the controller's terminal width, which a worker's reports are rendered to
    (its own stdout is a pipe, which pytest takes for 80 columns)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        from _pytest._io import TerminalWriter

        reporter._tw = TerminalWriter(io.StringIO())
        if width is not None:
            reporter._tw.fullwidth = width
    junitxml.write_nothing(config)
    if not config.pluginmanager.has_plugin(_INTERNAL_ERRORS):
        config.pluginmanager.register(_InternalErrorsToStderr(), _INTERNAL_ERRORS)


_INTERNAL_ERRORS = "shoal-internal-errors"


def draw_no_tests(config, *, count: bool) -> None:
    """pytest's reporter does not draw a silenced process's tests (their location, letter and
    percentage cost a tiny test about a fifth of pytest's own time): the controller draws
    every test from the reports it is sent. With ``count`` its ``stats`` still count them, as
    the collector's must for the summaries that the replay feeds; a worker's reporter counts
    none, as nothing reads them there (the summaries come from the collector, or from a
    reset reporter under ``-n 0``, see ``worker_summaries_only``). Other plugins' hooks stay."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    hooks = ["pytest_runtest_logstart", "pytest_runtest_logfinish"]
    if not count:
        hooks.append("pytest_runtest_logreport")
    for name in hooks:
        hook = getattr(config.hook, name)
        if any(impl.plugin is reporter for impl in hook.get_hookimpls()):
            hook._remove_plugin(reporter)


class _InternalErrorsToStderr:
    """A silenced process's INTERNALERROR lines, on stderr as pytest writes them when no
    reporter takes them: the controller shows a worker's stderr, the collector's is the
    terminal's. Without them a run would end with "crashed" and no reason."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_internalerror(self, excrepr):
        for line in str(excrepr).split("\n"):
            sys.stderr.write(f"INTERNALERROR> {line}\n")
        sys.stderr.flush()
        return True


# pytest's own terminal summary sections, all in the controller's terminal.
_PYTEST_SUMMARIES = (
    "summary_errors",
    "summary_failures",
    "summary_xfailures",
    "summary_warnings",
    "summary_passes",
    "summary_xpasses",
    "short_test_summary",
)


def hand_reporting_over(config) -> None:
    """The collector's terminal prints nothing: not the tests, nor pytest's own summary
    sections (the controller prints those), while other plugins' summaries still run and are
    forwarded (see ``forward_summary``)."""
    silence(config)
    draw_no_tests(config, count=True)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    for name in _PYTEST_SUMMARIES:
        if reporter is not None and hasattr(reporter, name):
            setattr(reporter, name, lambda *args, **kwargs: None)
    # pytest's other summaries (--durations) would read the replayed reports.
    hook = config.hook.pytest_terminal_summary
    for impl in hook.get_hookimpls():
        if impl.plugin is not reporter and plugin_package(impl.plugin) == "_pytest":
            hook._remove_plugin(impl.plugin)


def worker_summaries_only(config, shoal) -> None:
    """Under ``-n 0``, the terminal summaries of plugins that keep their results in the process
    that ran the tests (pytest-benchmark's table) are forwarded from the worker, as the
    finished collector's are. Every other summary (a conftest's, pytest-html's "generated"
    line, pytest-cov's table) is the collecting process's, which the replay fed: printed once."""
    hand_reporting_over(config)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.stats = {}  # the controller reports tests and warnings itself
    hook = config.hook.pytest_terminal_summary
    for impl in hook.get_hookimpls():
        keep = impl.plugin in (shoal, reporter) or plugin_package(impl.plugin) in benchmark.WORKER_SUMMARIES
        if not keep:
            hook._remove_plugin(impl.plugin)


def forward_summary(channel, terminalreporter, known_warnings: int):
    """The body of a ``pytest_terminal_summary`` wrapper (``yield from`` it): what other
    plugins add to the terminal summary (a coverage table, say) goes to the controller, which
    prints it where pytest would, with the warnings since the first ``known_warnings`` (the
    cache's, at session end), which the controller lists and counts with the rest."""
    config = terminalreporter.config
    stats = terminalreporter.stats.get("warnings", [])
    warnings = warning_reports(config, stats[known_warnings:])
    out = terminalreporter._tw._file
    start = len(out.getvalue())
    result = yield
    text = out.getvalue()[start:]
    if text.strip() or warnings:
        channel.send({"type": "terminal_summary", "text": text, "warnings": warnings})
    return result
