"""Telling pytest's and shoal's own plugins from the suite's and third parties'."""

from __future__ import annotations

import sys


def builtin(plugin) -> bool:
    """pytest's own plugins, and shoal's."""
    module = plugin_module(plugin)
    return plugin_package(plugin) == __name__.partition(".")[0] or module.startswith("_pytest.")


def plugin_module(plugin) -> str:
    """The module a plugin comes from: itself, or its class's."""
    return plugin.__name__ if isinstance(plugin, type(sys)) else type(plugin).__module__


def plugin_package(plugin) -> str:
    return plugin_module(plugin).partition(".")[0]
