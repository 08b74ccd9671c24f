"""What pytest-xdist gives plugins and suites, so they run under shoal as under xdist: its
hook specifications and the ``xdist.plugin`` name, the ``worker_id`` and ``testrun_uid``
fixtures (this module is registered as a plugin for them), the worker identity
(``config.workerinput``, ``PYTEST_XDIST_*``), the controlling side's worker nodes, and its
command-line flags.

pytest-xdist itself is never loaded (``-p no:xdist``): shoal's controller takes its place.
"""

from __future__ import annotations

import os
import sys
import uuid

import pytest

from .compat import rerunfailures


@pytest.fixture(scope="session")
def worker_id(request):
    """pytest-xdist's fixture: ``gw0``, ``gw1``... in a worker, ``master`` without workers."""
    workerinput = getattr(request.config, "workerinput", None)
    return workerinput["workerid"] if workerinput else "master"


@pytest.fixture(scope="session")
def testrun_uid(request):
    """pytest-xdist's fixture: one hex id shared by every worker of a run."""
    workerinput = getattr(request.config, "workerinput", None)
    return workerinput["testrunuid"] if workerinput else uuid.uuid4().hex


def take_identity(config, worker: dict, workeroutput: dict | None = None) -> None:
    """Give this process its worker identity, as pytest-xdist's workers have it; a forked
    worker's ``workeroutput`` starts as the collector's was at the fork."""
    if not worker.get("distributed"):
        return  # -n 0: look like plain pytest, as xdist does without workers
    wid = worker["workerid"]
    os.environ["PYTEST_XDIST_WORKER"] = wid
    os.environ["PYTEST_XDIST_WORKER_COUNT"] = str(worker["workercount"])
    os.environ["PYTEST_XDIST_TESTRUNUID"] = worker["testrunuid"]
    rerunfailures.as_in_an_xdist_worker()
    config.workerinput = {
        "workerid": wid,
        "workercount": worker["workercount"],
        "testrunuid": worker["testrunuid"],
        "mainargv": worker["mainargv"],
        **worker.get("workerinput", {}),
    }
    config.workeroutput = dict(workeroutput or {})


def workerinput(identity: dict) -> dict:
    """A worker's ``workerinput`` before plugins' ``pytest_configure_node`` adds to it (a
    forked worker takes its node's as its own)."""
    keys = ("workerid", "workercount", "testrunuid", "mainargv")
    return {**{key: identity[key] for key in keys}, **identity.get("workerinput", {})}


def xdist_flags(config) -> None:
    """xdist's flags beyond ``-n``/``--dist``: ``-d`` is ``--dist load``; ``--tx N*popen``
    adds ``N`` workers (``-n`` wins when given); remote gateways, rsync and looponfail are
    refused with one line (exit 4)."""
    option = config.option
    if option.looponfail:
        raise pytest.UsageError("shoal does not support -f/--looponfail (pytest-xdist's looponfail)")
    if option.rsyncdir or option.rsyncignore:
        raise pytest.UsageError("shoal does not support --rsyncdir/--rsyncignore: it runs workers locally")
    popen = 0
    for spec in option.tx:
        count, star, kind = spec.partition("*")
        if not star:
            count, kind = "1", count
        if kind.split("//")[0] != "popen" or not count.isdigit():
            raise pytest.UsageError(f"shoal runs local workers only: --tx {spec} is not N*popen")
        popen += int(count)
    if option.tx and option.numprocesses is None:
        option.numprocesses = str(popen)
    if option.distload and option.dist is None:
        option.dist = "load"


def auto_num_workers(config) -> int | None:
    """A plugin's answer to ``-n auto`` (xdist's ``pytest_xdist_auto_num_workers``)."""
    count = config.hook.pytest_xdist_auto_num_workers(config=config)
    return count if isinstance(count, int) and count > 0 else None


class _Gateway:
    """What plugins read of an xdist node's execnet gateway: its id (``gw0``) and, from
    ``_rinfo()``, the interpreter it runs (pytest-cov names workers by it)."""

    def __init__(self, id: str) -> None:
        self.id = id

    def _rinfo(self):
        import types

        return types.SimpleNamespace(
            executable=sys.executable,
            version_info=sys.version_info,
            platform=sys.platform,
            cwd=os.getcwd(),
        )


class Node:
    """A worker as the controlling side's xdist hooks see it (xdist's WorkerController):
    ``gateway.id``, ``workerid``, ``config``, ``workerinput``, ``nodemanager.roots`` (rsync
    roots: none) and, once it has finished its session, ``workeroutput`` (a crashed worker's
    node has none, as under xdist)."""

    def __init__(self, config, workerid: str, workerinput=None) -> None:
        import types

        self.config = config
        self.gateway = _Gateway(workerid)
        self.nodemanager = types.SimpleNamespace(roots=[])
        self.workerid = workerid
        self.workerinput = workerinput if workerinput is not None else {"workerid": workerid}
        self.shutting_down = False
        # pytest's reports render "[gw0] linux -- Python 3.x /path/python" from it; the
        # workers run this interpreter.
        self.workerinfo = {
            "version": sys.version,
            "version_info": tuple(sys.version_info),
            "sysplatform": sys.platform,
            "executable": sys.executable,
            "cwd": os.getcwd(),
            "id": workerid,
        }

    def __repr__(self) -> str:
        return f"<WorkerController {self.gateway.id}>"


STAND_IN = "xdist.plugin"


class StandIn:
    """Registered as ``xdist.plugin``: plugins ask ``hasplugin("xdist.plugin")`` before
    implementing xdist's hooks (syrupy's pytest_testnodedown), and shoal calls them."""


class HookSpecs:
    """pytest-xdist's hook specifications: the names and arguments of ``xdist.newhooks``."""

    @pytest.hookspec()
    def pytest_xdist_setupnodes(self, config, specs):
        """Before any worker starts."""

    @pytest.hookspec()
    def pytest_xdist_newgateway(self, gateway):
        """A worker's gateway was made (never called by shoal: no execnet)."""

    @pytest.hookspec()
    def pytest_xdist_rsyncstart(self, source, gateways):
        """Before rsync (never called: shoal has no rsync)."""

    @pytest.hookspec()
    def pytest_xdist_rsyncfinish(self, source, gateways):
        """After rsync (never called: shoal has no rsync)."""

    @pytest.hookspec(firstresult=True)
    def pytest_xdist_getremotemodule(self):
        """The module a remote worker runs (never called by shoal)."""

    @pytest.hookspec()
    def pytest_configure_node(self, node):
        """Before a worker starts: a plugin may add to ``node.workerinput``."""

    @pytest.hookspec()
    def pytest_testnodeready(self, node):
        """A worker is ready for tests."""

    @pytest.hookspec()
    def pytest_testnodedown(self, node, error):
        """A worker finished (``node.workeroutput`` holds its ``config.workeroutput``) or
        crashed (``error`` says how; no ``workeroutput``)."""

    @pytest.hookspec()
    def pytest_xdist_node_collection_finished(self, node, ids):
        """A worker finished collecting."""

    @pytest.hookspec(firstresult=True)
    def pytest_xdist_make_scheduler(self, config, log):
        """A scheduler object (shoal's controller schedules; not called)."""

    @pytest.hookspec(firstresult=True)
    def pytest_xdist_auto_num_workers(self, config):
        """The number of workers ``-n auto`` starts."""

    @pytest.hookspec(firstresult=True)
    def pytest_handlecrashitem(self, crashitem, report, sched):
        """A worker crashed while running ``crashitem``."""
