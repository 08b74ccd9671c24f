"""The entry point the bootstrap calls: each role registers its own plugins.

  collector   Options, CollectorPlugin (which hands over to a WorkerPlugin in each fork)
  worker      Options, WorkerPlugin (a spawned worker, which collects for itself)
  debug       Options, Foreground (``--pdb`` / ``--trace`` on the controller's terminal)

``xdist_compat`` is registered in all three for its fixtures.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from . import forking, xdist_compat
from .channel import Channel, hello
from .collector import CollectorPlugin, distributed
from .debug import Foreground
from .keeper import start_worker_under_keeper
from .options import Options
from .worker import WorkerPlugin, line_buffered

# pytest-xdist's plugins, where installed: shoal is the controller, and defines their options;
# and the wheel's own (``pytest -n`` hands over to shoal), which would define -n a second time.
_NOT_HERE = ["-p", "no:xdist", "-p", "no:xdist.looponfail", "-p", "no:shoal"]


def main(argv: list[str]) -> int:
    """``argv`` is ``[socket, role, identity-json, *pytest-args]`` (for the ``debug`` role,
    identity-json is the node ids to run, or ``null``)."""
    path, role, identity = argv[0], argv[1], json.loads(argv[2])
    args = [*_NOT_HERE, *argv[3:]]
    if role == "debug":
        plugins = [Options(lambda config: False), Foreground(identity), xdist_compat]
        return int(_pytest_main(args, plugins))
    if role == "worker":
        start_worker_under_keeper(os.getppid())
        line_buffered()
        channel = Channel(path)
        options = Options(lambda config: bool(identity.get("distributed")))
        plugin = WorkerPlugin(channel, identity)
    else:
        forking.watch_environ()
        channel = Channel(path)
        options = Options(distributed)
        plugin = CollectorPlugin(channel, options, forking.socket_fds())
    channel.send(hello(role, identity))
    started_as = os.getpid()
    try:
        code = _pytest_main(args, [options, plugin, xdist_compat])
    except KeyboardInterrupt:
        code = pytest.ExitCode.INTERRUPTED
    except Exception:
        import traceback

        traceback.print_exc()
        code = pytest.ExitCode.INTERNAL_ERROR
    sys.stdout.flush()
    sys.stderr.flush()
    if os.getpid() != started_as:
        # A worker forked from the collector must not run the collector's atexit handlers a
        # second time.
        os._exit(int(code))
    return int(code)


def _pytest_main(args: list[str], plugins: list) -> int:
    """pytest.main, but usage errors name shoal rather than ``pytest.main()``."""
    import inspect

    from _pytest import config

    main = getattr(config, "_main", None)
    if main is not None and "prog" in inspect.signature(main).parameters:
        return main(args=args, plugins=plugins, prog="shoal")
    return pytest.main(args, plugins=plugins)  # older pytest: its usage line says pytest
