"""``--detect-leaks``: the state a test left behind, the usual cause of a test that passes
alone and fails after others on the same worker.

Registered in a worker only when the option is on. Before each test's setup it takes a
:class:`Snapshot` (environment, current directory, non-daemon threads, child processes, the
functions and classes of the project's modules, the number of open file descriptors); after
its teardown it takes another and keeps what differs, names only (an environment variable's
value may be a secret). The findings go with the test's ``test_done`` (``FOUND`` in its
stash) and into JUnit as ``shoal_leak`` properties of its testcase; they are warnings, never
failures.

Fixtures of wider scope change state on purpose and restore it in their own teardown, which
comes with a later test. So where a test's setup set such a fixture up, the state after its
setup is the reference (what the fixture made is the fixture's); where its teardown tears one
down, only what was already different before that teardown counts (what the fixture restores
is no leak). ``monkeypatch`` and the other function fixtures restore at the test's own
teardown, before the second snapshot, so a correct test reports nothing.
"""

from __future__ import annotations

import operator
import os
import sys
import threading
import types

import pytest

from . import PACKAGE_DIR

#: A test's findings, for the worker's ``test_done``: ``{"kind", "detail"}`` each.
FOUND = pytest.StashKey[list]()

#: What a module attribute must be to be watched: functions and classes, what a monkeypatch
#: left on a module replaces; data attributes change legitimately (caches).
_CODE = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type)

#: pytest's own, set and removed around each phase.
_PYTEST_VARIABLES = {os.fsencode("PYTEST_CURRENT_TEST")}


class LeakDetector:
    """The plugin: snapshots around each test, and what differs."""

    def __init__(self, rootdir) -> None:
        self._modules = ProjectModules(str(rootdir))
        self._last: Snapshot | None = None  # after the previous test: the next one's before
        self._before: Snapshot | None = None
        self._before_teardown: Snapshot | None = None
        self._wider_setup = False

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        # Between two tests the worker only reports and reads its queue: the state after one
        # is the state before the next, and one snapshot a test is half the cost.
        self._before = self._last or Snapshot(self._modules)
        self._before_teardown = None
        self._wider_setup = False

    @pytest.hookimpl(tryfirst=True)
    def pytest_fixture_setup(self, fixturedef, request):
        if fixturedef.scope != "function":
            self._wider_setup = True

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item, nextitem):
        # Leaving the test's class or module (or the session) tears wider fixtures down.
        if nextitem is None or nextitem.parent is not item.parent:
            self._before_teardown = Snapshot(self._modules)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_makereport(self, item, call):
        if self._before is None:
            return
        if call.when == "setup" and self._wider_setup:
            self._before = Snapshot(self._modules)
        if call.when != "teardown":
            return
        self._last = Snapshot(self._modules)
        found = self._before.changes(self._last)
        if self._before_teardown is not None:
            kept = self._before.changes(self._before_teardown)
            found = {key: detail for key, detail in found.items() if key in kept}
        self._before = None
        leaks = [{"kind": kind, "detail": detail} for (kind, _), detail in found.items()]
        item.stash[FOUND] = leaks
        item.user_properties.extend(("shoal_leak", f"{x['kind']}: {x['detail']}") for x in leaks)


class ProjectModules:
    """The imported modules of the project: files under its rootdir, not an installed
    package's (a virtualenv inside the project included), nor shoal's; and the names of
    their functions and classes. Looked for again only when ``sys.modules`` grew or shrank,
    as the snapshot after every test asks: a snapshot then costs a lookup per name, in C."""

    def __init__(self, rootdir: str) -> None:
        self._root = os.path.join(rootdir, "")
        prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, PACKAGE_DIR}
        self._outside = tuple(os.path.join(p, "") for p in prefixes)
        self._known: dict[str, bool] = {}
        self._seen = -1  # len(sys.modules) when _project was made
        self._project: list = []  # see code()

    def code(self) -> list:
        """(name, module, code attribute names, their getter) for each project module in
        ``sys.modules`` that has functions or classes."""
        if len(sys.modules) != self._seen:
            self._seen = len(sys.modules)
            self._project = []
            for name, module in list(sys.modules.items()):
                names = self._mine(name, module) and tuple(
                    a for a, v in vars(module).items() if isinstance(v, _CODE)
                )
                if names:
                    # One C call for every value; a name given twice always makes a tuple.
                    get = operator.itemgetter(*names, names[0])
                    self._project.append((name, module, names, get))
        return self._project

    def _mine(self, name: str, module) -> bool:
        mine = self._known.get(name)
        if mine is None:
            mine = self._known[name] = self._is_project(module)
        return mine

    def _is_project(self, module) -> bool:
        path = getattr(module, "__file__", None)
        if not isinstance(path, str):
            return False
        path = os.path.abspath(path)
        return (
            path.startswith(self._root)
            and not path.startswith(self._outside)
            and "site-packages" not in path
        )


class Snapshot:
    """What a test may leave behind, at one moment. Cheap by design: copies of dicts and
    sets, one directory listing per kind, nothing read from a file per module."""

    def __init__(self, modules: ProjectModules) -> None:
        self.environ = _environ()
        for name in _PYTEST_VARIABLES:
            self.environ.pop(name, None)
        self.cwd = _cwd()
        self.threads = {t for t in threading.enumerate() if not t.daemon}
        self.children = _children()
        self.modules = {
            name: (names, _values(vars(module), names, get))
            for name, module, names, get in modules.code()
        }
        self.fds = _open_fds()

    def changes(self, after: Snapshot) -> dict:
        """What differs in ``after``: ``{(kind, key): detail}``, keyed so that two
        comparisons can be intersected."""
        found = {}
        before_env, after_env = self.environ, after.environ
        if before_env != after_env:
            for name in after_env.keys() - before_env.keys():
                found["env", name] = f"{os.fsdecode(name)} added"
            for name in before_env.keys() - after_env.keys():
                found["env", name] = f"{os.fsdecode(name)} removed"
            for name in before_env.keys() & after_env.keys():
                if before_env[name] != after_env[name]:
                    found["env", name] = f"{os.fsdecode(name)} changed"
        if after.cwd != self.cwd:
            found["cwd", ""] = f"changed from {self.cwd} to {after.cwd}"
        for thread in after.threads - self.threads:
            if thread.is_alive():
                found["thread", thread.ident] = f"{thread.name!r} still alive (not a daemon)"
        if self.children is not None and after.children is not None:
            for pid in sorted(after.children - self.children):
                state = _process(pid)
                if state is not None:
                    found["process", pid] = f"pid {pid} ({state}) still running"
        for name, (names, values) in self.modules.items():
            now = after.modules.get(name)
            # Functions and classes compare by identity: an equal tuple is the same objects.
            if now is None or now == (names, values):
                continue
            # By name: the list of names is made again when sys.modules changed size.
            current = dict(zip(*now))
            for attribute, value in zip(names, values):
                new = current.get(attribute)
                if new is not value:
                    what = "replaced" if isinstance(new, _CODE) else "replaced or deleted"
                    found["module", f"{name}.{attribute}"] = f"{name}.{attribute} {what}"
        if self.fds is not None and after.fds is not None and after.fds > self.fds:
            more = after.fds - self.fds
            found["fd", ""] = f"{more} more open ({self.fds} before, {after.fds} after)"
        return found


def _environ() -> dict:
    """The environment as bytes: a copy of ``os.environ``'s own dict, in C, rather than one
    decode per variable (the largest part of a snapshot otherwise)."""
    data = getattr(os.environ, "_data", None)
    if isinstance(data, dict):
        return dict(data)
    return {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}


def _values(namespace: dict, names: tuple, get) -> tuple:
    """The values of ``names`` in a module's namespace (None for those deleted since)."""
    try:
        return get(namespace)[:-1]
    except KeyError:
        return tuple(map(namespace.get, names))


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # removed under us: that itself differs from before
        return None


def _children() -> set | None:
    """The pids of this process's children (every thread's), or None where ``/proc`` has no
    ``children`` files (not Linux, or a kernel without them)."""
    try:
        # One thread (as a worker mostly is): its task is the process's, no listing needed.
        tasks = [os.getpid()] if threading.active_count() == 1 else os.listdir("/proc/self/task")
        pids = set()
        for task in tasks:
            with open(f"/proc/self/task/{task}/children", "rb") as children:
                pids.update(int(pid) for pid in children.read().split())
        return pids
    except (OSError, ValueError):
        return None


def _process(pid: int) -> str | None:
    """A child's name, or None once it exited (a zombie not yet waited for has)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # pid (comm) state ...: comm may hold spaces and parentheses.
            text = stat.read().decode(errors="replace")
    except OSError:
        return None
    name, _, rest = text.partition("(")[2].rpartition(")")
    return None if rest.split()[:1] == ["Z"] else name


def _open_fds() -> int | None:
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(directory))
        except OSError:
            continue
    return None
