"""syrupy (written against 7.0, as in requirements-plugins.txt).

syrupy learns which snapshots were used in the process that ran the tests, and judges every
other one unused (``--snapshot-update`` deletes them) where the session ends. Under xdist each
worker hands its report to the controller through ``config.workeroutput`` and
``pytest_testnodedown`` (implemented only when ``hasplugin("xdist.plugin")``, which shoal's
stand-in answers). shoal's ``-n 0`` worker is plain pytest to plugins, so syrupy would judge
twice: rightly in the worker and, in the collecting process, where no test ran, that every
snapshot is unused. So that worker publishes instead of judging, and the collector (which
ends the session) merges it, as under ``-n 2``.
"""

from __future__ import annotations

import sys

from ..plugins import plugin_package


def report_as_a_worker(config, identity: dict) -> None:
    """Under ``-n 0``, syrupy in the worker publishes its report as in an xdist worker."""
    syrupy_session = sys.modules.get("syrupy.session")
    if identity.get("distributed") or not hasattr(syrupy_session, "is_xdist_worker"):
        return
    syrupy_session.is_xdist_worker = lambda: True
    if not hasattr(config, "workeroutput"):
        config.workeroutput = {}


def testnodedown_hook(config, distributed: bool):
    """``pytest_testnodedown`` as the collector calls it: under ``-n 0`` plain pytest has no
    nodes, and only syrupy's worker report must come here."""
    hook = config.hook.pytest_testnodedown
    if distributed:
        return hook
    return config.pluginmanager.subset_hook_caller(
        "pytest_testnodedown",
        [impl.plugin for impl in hook.get_hookimpls() if plugin_package(impl.plugin) != "syrupy"],
    )
