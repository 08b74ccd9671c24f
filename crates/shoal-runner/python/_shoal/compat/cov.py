"""pytest-cov (written against 7.1, as in requirements-test.txt; its xdist support has kept
this shape since 2.x).

pytest-cov measures an xdist worker with its ``DistWorker`` engine, which saves the data
beside the controller's top directory for the controller's ``DistMaster`` to combine and
report. It recognises a worker by ``config.workerinput`` holding ``cov_master_host`` and
``cov_master_topdir``, which xdist's controller adds in ``pytest_configure_node``; shoal's
collector adds them to every worker's ``workerinput``. A forked worker also inherits the
collector's own measurement, which must be restarted as a worker's, or the collector would
count the collection twice and miss the tests.
"""

from __future__ import annotations

import socket


def workerinput(config) -> dict:
    """What pytest-cov's controller side puts in a worker's ``workerinput``: the collector's
    host and top directory (workers save their data beside it)."""
    cov = config.pluginmanager.get_plugin("_cov")
    controller = getattr(cov, "cov_controller", None)
    if controller is None:
        return {}
    return {
        "cov_master_host": socket.gethostname(),
        "cov_master_topdir": controller.topdir,
        "cov_master_rsync_roots": [],
    }


def measure_as_worker(config) -> None:
    """A forked worker inherits the collector's coverage measurement; restart it the way
    pytest-cov starts an xdist worker's, so the collector alone combines and reports."""
    cov = config.pluginmanager.get_plugin("_cov")
    if getattr(cov, "cov_controller", None) is None or not hasattr(config, "workerinput"):
        return
    from pytest_cov import engine

    cov.cov_controller.cov.stop()
    cov.start(engine.DistWorker, config, config.workerinput["workerid"])
