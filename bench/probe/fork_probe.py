"""A pytest plugin for bench/fork.py (loaded with `-p fork_probe`, bench/probe/ on PYTHONPATH): what
forking a worker from the collector costs, and what the worker then copies.

In the collecting process, once collection is done, it notes the process's resident memory and
times one fork() of a child that exits at once (the part of starting a worker that grows with
the collector's size: copying its page tables). Every forked child notes its page-fault count
at the fork (os.register_at_fork), and at the end of its session writes, to
$SHOAL_FORK_PROBE_OUT/<worker>-<pid>.json, the minor faults since the fork and its
/proc/self/smaps_rollup: what it still shares with the collector and what it has made its own.

$SHOAL_FORK_PROBE_IMPORTS (comma-separated modules) are imported at start-up, to stand in for
a large application; $SHOAL_FORK_PROBE_FREEZE=1 calls gc.freeze() after collection, to see what
that would save.
"""

import gc
import importlib
import json
import os
import time
from pathlib import Path

OUT = Path(os.environ["SHOAL_FORK_PROBE_OUT"])
for name in filter(None, os.environ.get("SHOAL_FORK_PROBE_IMPORTS", "").split(",")):
    importlib.import_module(name)

_at_fork = {}
_ran = 0


def _minor_faults() -> int:
    # Field 10 of /proc/self/stat; the name in field 2 may hold spaces.
    return int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[7])


def _rollup() -> dict:
    """smaps_rollup's sizes in bytes, by name."""
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        if value.strip().endswith("kB"):
            out[key] = int(value.split()[0]) * 1024
    return out


def _forked() -> None:
    _at_fork.update(pid=os.getpid(), minflt=_minor_faults(), time=time.monotonic())


os.register_at_fork(after_in_child=_forked)


def pytest_collection_finish(session):
    # Only a collector that forks collects once; it must not read PYTEST_XDIST_WORKER here,
    # where shoal takes a suite asking for its worker identity as a reason to spawn.
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    forked = time.perf_counter() - start
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # a reaper of the runner's own took it
    if os.environ.get("SHOAL_FORK_PROBE_FREEZE") == "1":
        gc.freeze()
    (OUT / "collector.json").write_text(json.dumps({
        "pid": os.getpid(), "items": len(session.items), "fork_s": forked,
        "gc_tracked": len(gc.get_objects()), "frozen": gc.get_freeze_count(), **_rollup()}))


def pytest_runtest_logfinish():
    global _ran
    _ran += 1


def pytest_sessionfinish(session):
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker or _at_fork.get("pid") != os.getpid():
        return  # the collector, serial pytest, or a worker that was not forked
    (OUT / f"{worker}-{os.getpid()}.json").write_text(json.dumps({
        "worker": worker, "minflt": _minor_faults() - _at_fork["minflt"],
        "alive_s": time.monotonic() - _at_fork["time"], "tests": _ran,
        **_rollup()}))
