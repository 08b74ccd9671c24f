"""shoal's options, ini settings and markers, and pytest-xdist's, so that a project's addopts
written for xdist parse: registered in every process, whatever its role."""

from __future__ import annotations

import pytest

from . import xdist_compat


class Options:
    """The options and markers plugin. ``distributed(config)`` says whether the run has xdist
    workers (not ``-n 0``): plugins read xdist's ``config.option.dist`` ("no" without workers;
    pytest-benchmark disables itself otherwise)."""

    def __init__(self, distributed) -> None:
        self._distributed = distributed
        self.dist_given = None  # --dist as given, before pytest_configure fills it in

    def pytest_addhooks(self, pluginmanager):
        """xdist's hooks, whose own registration ``-p no:xdist`` skips: a conftest that
        implements them must load as it does under xdist. shoal's own copy of the specs,
        even with xdist installed: importing ``xdist`` here, before pytest's assertion
        rewriting has seen its modules, makes pytest warn that it cannot rewrite them."""
        pluginmanager.add_hookspecs(xdist_compat.HookSpecs)
        if not pluginmanager.is_blocked(xdist_compat.STAND_IN):
            pluginmanager.register(xdist_compat.StandIn(), xdist_compat.STAND_IN)

    def pytest_addoption(self, parser):
        group = parser.getgroup("shoal", "shoal (parallel runs; options also read from addopts)")
        # pytest reserves lowercase short options for itself; xdist registers -n the same way.
        group._addoption("-n", "--numprocesses", dest="numprocesses", metavar="N", default=None)
        group.addoption("--maxprocesses", dest="maxprocesses", type=int, default=None)
        group.addoption("--dist", dest="dist", default=None)
        group.addoption("--max-worker-restart", dest="maxworkerrestart", default=None)
        # The rest of xdist's flags, so addopts written for xdist parse (see xdist_flags).
        group._addoption("-d", action="store_true", dest="distload", default=False)
        group.addoption("--tx", dest="tx", action="append", default=[], metavar="xspec")
        group.addoption("--px", dest="px", action="append", default=[], metavar="xspec")
        group.addoption("--loadscope-reorder", dest="loadscopereorder", action="store_true", default=True)
        group.addoption("--no-loadscope-reorder", dest="loadscopereorder", action="store_false")
        group.addoption("--maxschedchunk", dest="maxschedchunk", type=int, default=None)
        group.addoption("--testrunuid", dest="testrunuid", default=None)
        group.addoption("--rsyncdir", dest="rsyncdir", action="append", default=[])
        group.addoption("--rsyncignore", dest="rsyncignore", action="append", default=[])
        group._addoption("-f", "--looponfail", dest="looponfail", action="store_true", default=False)
        for name in ("rsyncdirs", "rsyncignore", "looponfailroots"):
            parser.addini(name, "pytest-xdist's; shoal has no rsync or looponfail", type="paths")
        # The name pytest-timeout users already have; shoal's controller enforces it.
        parser.addini("timeout", "per-test timeout in seconds, enforced by shoal", default=None)
        parser.addini(
            "shoal_run_once",
            "session fixtures shoal sets up once per run and shares with every worker",
            type="linelist",
            default=[],
        )
        parser.addini(
            "shoal_serial_marker",
            "marker of tests that shoal runs with no other test beside them",
            default="serial",
        )

    @pytest.hookimpl(tryfirst=True)  # plugins read workerinput in their own pytest_configure
    def pytest_configure(self, config):
        xdist_compat.xdist_flags(config)
        self.dist_given = config.option.dist
        config.option.dist = self.dist_given or ("load" if self._distributed(config) else "no")
        config.addinivalue_line(
            "markers", "xdist_group(name): run tests of the same group on one worker"
        )
        config.addinivalue_line("markers", "timeout(seconds): fail the test after this long")
        config.addinivalue_line("markers", "flaky(reruns=N): run a failing test up to N more times")
        config.addinivalue_line(
            "markers", f"{config.getini('shoal_serial_marker')}: shoal runs it with no other test"
        )
        config.addinivalue_line(
            "markers", "resource(name, limit=1): at most `limit` such tests run at once"
        )
