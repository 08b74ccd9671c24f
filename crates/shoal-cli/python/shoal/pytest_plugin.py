"""``pytest -n N ...`` hands the whole run to shoal: the ``pytest11`` entry point ``shoal``.

IDE test explorers, tox and nox sessions, Makefiles and CI templates call ``pytest -n auto``;
with this plugin that command runs shoal, with the same arguments, this interpreter (shoal's
``--python``) and, since shoal replaces this process, the same exit code. Without ``-n`` (or
with ``-n 0``) pytest runs as it always does.

Who owns ``-n``: where pytest-xdist is installed (and not switched off with ``-p no:xdist``),
xdist does, unless the project opts in with ``pytest-n = true`` in ``[tool.shoal]``;
``pytest-n = false`` keeps ``-n`` off shoal even without xdist. ``-p no:shoal`` turns the
plugin off; shoal passes it to its own processes, where it never loads.

The hand-over happens as early as pytest allows: in ``pytest_load_initial_conftests``, once
the command line, the ini file and the plugins are known and before any conftest is imported
(shoal imports them in its own processes), outside pytest's global capture.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from pathlib import Path

import pytest

# Only a process's first pytest configuration may hand over: a test that runs pytest inside
# itself (pytester's runpytest) with ``-n`` must not replace the process that runs it.
_first_config = True


def pytest_addoption(parser, pluginmanager):
    if _xdist_owns_n(pluginmanager):
        return
    group = parser.getgroup("shoal", "pytest -n hands the run to shoal (pytest-xdist's options)")
    # pytest reserves lowercase short options for itself; xdist registers -n the same way.
    group._addoption(
        "-n",
        "--numprocesses",
        dest="numprocesses",
        metavar="N",
        default=None,
        help="run the tests with shoal in N worker processes ('auto': one per CPU); "
        "0 runs plain pytest",
    )
    group.addoption("--dist", dest="dist", default=None, help="shoal's --dist (xdist's modes)")
    group.addoption("--maxprocesses", dest="maxprocesses", type=int, default=None)
    group.addoption("--max-worker-restart", dest="maxworkerrestart", default=None)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_load_initial_conftests(early_config):
    """Outermost, so that pytest's capture of the conftests' import has not started yet and
    shoal gets the terminal."""
    global _first_config
    first, _first_config = _first_config, False
    if first and _hands_over(early_config):
        _exec_shoal(early_config)
    return (yield)


def _hands_over(config) -> bool:
    ns = config.known_args_namespace
    workers = getattr(ns, "numprocesses", None)
    if workers in (None, "0") or ns.help or ns.version:
        return False
    if "_shoal" in sys.modules:  # inside one of shoal's own processes (a nested pytest)
        return False
    choice = _project_choice(Path(config.invocation_params.dir))
    if choice is None:
        return not _xdist_owns_n(config.pluginmanager)
    return choice


def _xdist_owns_n(pluginmanager) -> bool:
    return importlib.util.find_spec("xdist") is not None and not pluginmanager.is_blocked("xdist")


def _project_choice(directory: Path) -> bool | None:
    """``pytest-n`` of ``[tool.shoal]`` in the nearest ``pyproject.toml``, as shoal reads its
    table (shoal itself checks the rest of the table once it runs)."""
    for folder in (directory, *directory.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            break
    else:
        return None
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pytest depends on tomli before Python 3.11
        import tomli as tomllib
    try:
        with pyproject.open("rb") as file:
            table = tomllib.load(file).get("tool", {}).get("shoal", {})
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise pytest.UsageError(f"pytest -n: failed to read {pyproject}: {error}") from None
    choice = table.get("pytest-n")
    if choice is not None and not isinstance(choice, bool):
        raise pytest.UsageError(
            f"pytest -n: pytest-n in [tool.shoal] of {pyproject} must be true or false, "
            f"not {choice!r}"
        )
    return choice


def _exec_shoal(config) -> None:
    """Replaces this process with shoal on the same arguments and this interpreter."""
    shoal = _shoal_executable()
    args = [shoal, "--python", sys.executable, *config.invocation_params.args]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(shoal, args)
    except OSError as error:
        raise pytest.UsageError(f"pytest -n: failed to start {shoal}: {error}") from None


def _shoal_executable() -> str:
    """The shoal installed beside this plugin (the same wheel put both there), else the first
    on ``PATH``."""
    beside = Path(sysconfig.get_path("scripts"), "shoal")
    if beside.is_file():
        return str(beside)
    found = shutil.which("shoal")
    if found is None:
        raise pytest.UsageError(
            f"pytest -n: failed to find the shoal executable (not in {beside.parent} nor on "
            "PATH): reinstall shoal, or run with -p no:shoal"
        )
    return found
