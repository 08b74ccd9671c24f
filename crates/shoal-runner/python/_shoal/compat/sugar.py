"""pytest-sugar (written against 1.1, as in requirements-plugins.txt).

pytest-sugar answers ``pytest_report_teststatus`` for its own terminal reporter: a category
for every phase, passing setups included, that its reporter then filters. shoal's terminal
replaces that reporter and counts tests as pytest does, so shoal asks the hook without
pytest-sugar's answers.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def teststatus_hook(config):
    """``pytest_report_teststatus`` without pytest-sugar's answers."""
    sugar = config.pluginmanager.get_plugin("sugar")
    if sugar is None:
        return config.hook.pytest_report_teststatus
    return config.pluginmanager.subset_hook_caller("pytest_report_teststatus", [sugar])
