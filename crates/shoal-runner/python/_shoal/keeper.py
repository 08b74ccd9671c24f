"""The keeper: the process between a worker and whoever started it (the collector, or the
controller for a spawned worker), that gives the worker a process group, reaps what its tests
leave behind, and exits as the worker did."""

from __future__ import annotations

import os
import signal
import sys

# Signals the keeper must survive: the terminal's (a spawned keeper joins the controller's
# process group) and those the controller sends a worker while the keeper is still in its group.
_KEEPER_IGNORES = {signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGTSTP, signal.SIGQUIT}


def start_worker_under_keeper(parent: int) -> None:
    """Split this process, a child of ``parent``, in two: the worker, which returns from here
    to run the tests, and its keeper, the worker's parent, which never returns.

    The keeper makes a process group for the worker and leaves it again, so the controller can
    signal the worker with everything its tests start, while the worker leads neither a group
    nor a session: a test may call ``os.setsid()``, as daemonising code does (pytest-xdist's
    workers lead no group either). The keeper is a child subreaper (Linux): whatever the
    worker's tests leave behind, daemons that left the group included, is reparented to it.
    When the worker ends, the keeper kills all of that and exits as the worker did, so whoever
    waits for it (the collector, or the controller for a spawned worker) sees the worker's own
    status. It runs none of the suite's code, so it may reap any child it gets.
    """
    os.setpgid(0, 0)
    _die_with_parent(parent)
    if sys.platform == "linux":
        import ctypes

        PR_SET_CHILD_SUBREAPER = 36
        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _KEEPER_IGNORES)
    keeper = os.getpid()
    worker = os.fork()
    if worker == 0:
        _die_with_parent(keeper)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return
    for signum in _KEEPER_IGNORES:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    try:
        os.setpgid(0, os.getpgid(os.getppid()))
    except OSError:
        pass  # the parent is gone: this process dies with it
    _keep(worker)


def _die_with_parent(parent: int) -> None:
    """SIGKILL when ``parent`` ends; at once if it already has (it may end between the fork
    and this call, and the kernel would then never send the signal)."""
    if sys.platform == "linux":
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


def _keep(worker: int) -> None:
    """The keeper's life: reap every child until the worker ends, then kill what is left and
    exit with the worker's status."""
    status = None
    while True:
        try:
            pid, wstatus = os.waitpid(-1, 0)
        except ChildProcessError:
            break  # no child left, so no descendant either
        if pid == worker:
            status = wstatus
        if status is not None:
            _kill_children()
    if os.WIFSIGNALED(status):
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signum = os.WTERMSIG(status)
        if signum not in (signal.SIGKILL, signal.SIGSTOP):  # those keep their default anyway
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
        os.kill(os.getpid(), signum)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _kill_children() -> None:
    """SIGKILL every child of this process; their own children then become its children."""
    if not os.path.isdir("/proc"):
        return  # not Linux: no subreaper either, so the worker's children went to init
    me = str(os.getpid()).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = f.read().rsplit(b")", 1)[1].split()[1]
            if ppid == me:
                os.kill(int(entry), signal.SIGKILL)
        except (OSError, IndexError):
            pass  # gone meanwhile
