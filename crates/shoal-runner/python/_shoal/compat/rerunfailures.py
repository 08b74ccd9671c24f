"""pytest-rerunfailures (written against 16.7, as in requirements-plugins.txt).

In an xdist worker pytest-rerunfailures logs each rerun (a report with outcome ``rerun``) for
the controller, but only when it finds pytest-xdist 1.20 or newer installed
(``works_with_current_xdist``); shoal's workers are xdist workers to it, xdist installed or
not. Its ``flaky`` mark is its own: with it installed, shoal leaves ``@pytest.mark.flaky``
alone instead of rerunning such tests itself.
"""

from __future__ import annotations

import sys


def present(config) -> bool:
    """Whether pytest-rerunfailures runs: its ``flaky`` mark, not shoal's."""
    return config.pluginmanager.hasplugin("rerunfailures")


def as_in_an_xdist_worker() -> None:
    """Make pytest-rerunfailures find a pytest-xdist it works with."""
    rerunfailures = sys.modules.get("pytest_rerunfailures")
    if rerunfailures is not None and hasattr(rerunfailures, "works_with_current_xdist"):
        rerunfailures.works_with_current_xdist = lambda: True
