"""The ``debug`` role: plain pytest on the controller's terminal, where ``--pdb`` and
``--trace`` work (their debugger reads commands from the terminal, which workers lack)."""

from __future__ import annotations

import pytest


class Foreground:
    """Restricts the session to the tests the controller names (the parallel run's
    failures), or every selected test when it names none."""

    def __init__(self, nodeids: list | None) -> None:
        self.nodeids = None if nodeids is None else set(nodeids)

    @pytest.hookimpl(tryfirst=True)  # before junitxml's own pytest_configure
    def pytest_configure(self, config):
        if self.nodeids is not None:
            config.option.xmlpath = None  # the parallel run wrote the run's report

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config, items):
        if self.nodeids is None:
            return
        deselected = [item for item in items if item.nodeid not in self.nodeids]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if item.nodeid in self.nodeids]
