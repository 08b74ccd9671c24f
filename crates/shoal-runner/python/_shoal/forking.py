"""Whether the collector may fork its workers: what the suite made while it was imported and
collected that forked processes must not share (threads, sockets, database connections,
locks), and where the suite's code asked which worker it runs in before any worker existed
(a fork would hand every worker the collector's answer)."""

from __future__ import annotations

import os
import sys
import threading

from . import PACKAGE_DIR


class IdentityWatch:
    """Where the suite's own code first asked which worker it runs in while the collector
    imported, configured and collected it, before any worker existed: a fork of the collector
    would hand every worker the collector's answer (see ``EnvironWatch``, ``watch_config``)."""

    first: str | None = None
    # Frames that only pass the question on: os.environ's and xdist's own helpers
    # (``xdist.is_xdist_worker`` asks ``hasattr(config, "workerinput")`` for its caller).
    _relays = (
        "os.py",
        "_collections_abc.py",
        "<frozen os>",
        "<frozen _collections_abc>",
        f"{os.sep}xdist{os.sep}__init__.py",
        f"{os.sep}xdist{os.sep}plugin.py",
    )

    @classmethod
    def note(cls, what: str, frame) -> None:
        while frame is not None and frame.f_code.co_filename.endswith(cls._relays):
            frame = frame.f_back
        if cls.first is not None or frame is None:
            return
        filename = frame.f_code.co_filename
        # The suite's own code counts; installed plugins (pytest-cov and pytest-randomly read
        # workerinput, and shoal hands it to them) and shoal itself do not.
        if "site-packages" in filename or filename.startswith(PACKAGE_DIR + os.sep):
            return
        shown = os.path.relpath(filename) if filename.startswith(os.getcwd() + os.sep) else filename
        cls.first = f"{shown}:{frame.f_lineno} {what}"


class EnvironWatch(type(os.environ)):
    """``os.environ`` while the collector imports, configures and collects the suite: notes
    reads of the ``PYTEST_XDIST_*`` variables (``[]``, ``in``, ``get``, ``os.getenv``)."""

    def __getitem__(self, key):
        self._note(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self._note(key)
        return super().__contains__(key)

    @staticmethod
    def _note(key) -> None:
        if isinstance(key, str) and key.startswith("PYTEST_XDIST_"):
            IdentityWatch.note(f"reads {key}", sys._getframe(2))


def watch_environ() -> None:
    os.environ.__class__ = EnvironWatch


def unwatch_environ() -> None:
    os.environ.__class__ = EnvironWatch.__mro__[1]


def watch_config(config) -> None:
    """Makes ``config`` note the suite asking for ``workerinput`` or ``workeroutput``, which
    only xdist's workers have (``hasattr``, ``getattr`` with a default, ``try``): until
    ``unwatch_config``, missing attributes of those names go through ``__getattr__``."""
    base = type(config)

    def __getattr__(self, name):
        if name in ("workerinput", "workeroutput"):
            IdentityWatch.note(f"asks for config.{name}", sys._getframe(1))
        message = f"{base.__name__!r} object has no attribute {name!r}"
        raise AttributeError(message, name=name, obj=self)

    watched = {"__getattr__": __getattr__, "_shoal_base": base}
    config.__class__ = type(base.__name__, (base,), watched)


def unwatch_config(config) -> None:
    config.__class__ = getattr(type(config), "_shoal_base", type(config))


def fork_unsafe_reason(sockets_at_start: set) -> str | None:
    """Why the collector must not fork its workers, or None. ``sockets_at_start`` are the
    sockets open before the suite was imported (shoal's channel and whatever the controller's
    parent left open)."""
    if os.environ.get("SHOAL_START") == "spawn":
        return "--start spawn was given"
    if not hasattr(os, "fork") or sys.platform not in ("linux", "darwin"):
        return f"fork is not available on {sys.platform}"
    if threading.active_count() > 1:
        names = ", ".join(t.name for t in threading.enumerate() if t is not threading.current_thread())
        return f"threads are alive in the collecting process ({names})"
    return _fork_hostile_reason(sockets_at_start)


def socket_fds() -> set:
    """The open socket descriptors of this process, as (fd, inode) pairs (Linux only)."""
    found = set()
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return found
    for name in names:
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the listing's own descriptor
        if target.startswith("socket:"):
            found.add((int(name), target))
    return found


_UNSHARED = "must not be shared by forked workers"


def _sqlite_is_open(connection) -> bool:
    try:
        connection.total_changes
    except Exception:  # sqlite3.ProgrammingError: closed
        return False
    return True


# Objects that must not be shared by forked processes: (module, class, still live?, holds a
# socket while live). Only modules already imported are looked at, and the kinds that hold a
# socket only when one was opened since start-up, which spares most suites the scan. A thread
# pool's threads, and a ProcessPoolExecutor's, are caught as live threads. (Sockets come last,
# see _fork_hostile_reason: a socket is live unless it was open at start-up.)
_FORK_HOSTILE = (
    # filelock 4 refuses a lock made before a fork, whether it was acquired or not.
    ("filelock", "BaseFileLock", lambda lock: True, False),
    # SQLite: "do not carry an open database connection across a fork()".
    ("sqlite3", "Connection", _sqlite_is_open, False),
    ("grpc._channel", "Channel", lambda channel: True, False),
    ("psycopg", "BaseConnection", lambda conn: not conn.closed, True),
    ("psycopg2.extensions", "connection", lambda conn: not conn.closed, True),
    ("sqlalchemy.engine", "Engine", lambda engine: engine.pool.checkedin() > 0, True),
    ("asyncio", "AbstractEventLoop", lambda loop: not loop.is_closed(), True),
)


def _fork_hostile_reason(sockets_at_start: set) -> str | None:
    """Names the first object made while collecting that forked workers must not share (see
    ``_FORK_HOSTILE``), else a socket opened since start-up, else ``None``."""
    import gc

    new_sockets = socket_fds() - sockets_at_start
    known = dict(sockets_at_start)
    hostile = (
        *_FORK_HOSTILE,
        ("socket", "socket", lambda sock: sock.fileno() not in known, True),
    )
    kinds = []
    for module, name, live, holds_socket in hostile:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and (new_sockets or not holds_socket):
            kinds.append((cls, live))
    if kinds:
        # One pass in C over every object's type; a second, in Python, only when one is hostile.
        # Objects a suite froze (gc.freeze(), as packaging's conftest does after collecting)
        # are out of get_objects' sight: thaw them for the scan, and freeze again.
        frozen = gc.get_freeze_count()
        gc.unfreeze()
        objects = gc.get_objects()
        if frozen:
            gc.freeze()
        classes = tuple(cls for cls, _ in kinds)
        present = {t for t in set(map(type, objects)) if issubclass(t, classes)}
        found = [obj for obj in objects if type(obj) in present] if present else []
        del objects
        for cls, live in kinds:  # in _FORK_HOSTILE's order: a loop before its sockets
            for obj in found:
                if isinstance(obj, cls) and _is_live(live, obj):
                    return f"{_describe(obj)} made while collecting {_UNSHARED}"
    if new_sockets:
        fd, inode = min(new_sockets)
        return f"a socket opened while collecting (fd {fd}, {inode}) {_UNSHARED}"
    return None


def _is_live(live, obj) -> bool:
    try:
        return bool(live(obj))
    except Exception:
        return True  # cannot tell: assume the worst


def _describe(obj) -> str:
    """``module.NAME (a package.Class)`` for a module-level global, else ``a package.Class``."""
    kind = f"a {type(obj).__module__}.{type(obj).__qualname__}"
    for name, module in list(sys.modules.items()):
        for attr, value in list(getattr(module, "__dict__", {}).items()):
            if value is obj:
                return f"{name}.{attr} ({kind})"
    return kind
