"""A worker: the plugin of a process that runs the tests the controller sends it, one at a
time through pytest's own ``pytest_runtest_protocol``, and sends each test's reports.

A forked worker starts as a copy of the collector, which registers this plugin in place of
its own at the fork (see ``collector.CollectorPlugin._become_worker``); a spawned worker
registers it from the start and collects for itself.
"""

from __future__ import annotations

import collections
import os
import resource
import signal
import socket
import struct
import sys
import threading
from pathlib import Path

import pytest

from . import leaks, run_once, terminal, xdist_compat
from .channel import Channel, frame, hello, read_failed
from .compat import benchmark, hypothesis, junitxml, randomly, syrupy
from .report import MAX_SECTION, cut, interrupt_exit, phase_report, session_exit, test_reports, warning_entry
from .wire import to_wire, warning_data


class WorkerPlugin:
    """The state of one worker; registered with pytest as a plugin. ``identity`` is what
    the controller says of this worker (see the protocol's ``WorkerIdentity``)."""

    def __init__(self, channel: Channel, identity: dict) -> None:
        self.channel = channel
        self.identity = identity
        self.config = None
        self._reports: list = []
        self._warnings: list = []
        self._current = None  # the collection index of the test running in this worker
        self._forward_summary = False
        self._replay = None  # with the identity's "replay": this test's report hook calls
        # Every hook call is replayed, or only the reports Hypothesis marked (see ReplayScope).
        self._replay_all = identity.get("replay") == "all"
        self._phase = None  # the state file, see PhaseFile
        self._stack_file = None  # where SIGUSR1 dumps every thread's stack

    # -- a spawned worker's start (a forked one's is the collector's, up to the fork) -----------

    @pytest.hookimpl(tryfirst=True)
    def pytest_cmdline_main(self, config):
        """Before any plugin configures: xdist's workers have ``workerinput`` and
        ``workeroutput`` from the start, and plugins configure with them (pytest-metadata
        is tryfirst, and registered after shoal)."""
        xdist_compat.take_identity(config, self.identity)
        randomly.seed_like_the_collector(config, self.identity)

    def pytest_configure(self, config):
        self.config = config  # (historic: also called when a fork registers this plugin)

    @pytest.hookimpl(tryfirst=True)  # before the terminal prints its header
    def pytest_sessionstart(self, session):
        self.prepare(session.config)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        nodeids = [item.nodeid for item in session.items]
        self.channel.send({"type": "ready", "collection": nodeids})
        self.run_tests(session)
        return True

    def prepare(self, config) -> None:
        """Silence the worker's terminal, point its temporary directories below the run's, and
        let the controller ask it for stack dumps."""
        identity = self.identity
        junitxml.start_in_worker(config)
        terminal.silence(config, identity.get("width"))
        terminal.draw_no_tests(config, count=False)
        if identity.get("distributed"):
            hypothesis.no_summary_here(config)
        if identity.get("detect_leaks"):
            config.pluginmanager.register(leaks.LeakDetector(config.rootpath), "shoal-leaks")
        _no_debugger(config)
        if identity.get("state_file"):
            self._phase = PhaseFile(identity["state_file"])
        if identity.get("stack_file"):
            # The controller asks for every thread's stack (SIGUSR1) before ending a test that
            # overran its timeout.
            import faulthandler

            fd = open_private(identity["stack_file"], os.O_WRONLY | os.O_TRUNC)
            self._stack_file = os.fdopen(fd, "w")
            faulthandler.register(signal.SIGUSR1, file=self._stack_file, all_threads=True)
        tmp = getattr(config, "_tmp_path_factory", None)
        if identity.get("distributed") and tmp is not None and identity.get("basetemp"):
            basetemp = Path(identity["basetemp"]) / f"popen-{identity['workerid']}"
            tmp._given_basetemp = basetemp
            tmp._basetemp = None
            config.option.basetemp = str(basetemp)

    # -- the tests ------------------------------------------------------------------------------

    def pytest_internalerror(self):
        """A worker's internal error ends the run, as under xdist (its text is on stderr)."""
        try:
            self.channel.send({"type": "internal_error"})
        except OSError:
            pass  # the controller is gone: nobody to tell

    @pytest.hookimpl(tryfirst=True)
    def pytest_fixture_setup(self, fixturedef, request):
        return run_once.set_up(self.channel, fixturedef, request)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item, nextitem):
        """Before the last test's teardown, which also tears the session down, its outcome so
        far goes to the controller: a crash in session teardown must not lose a passed test."""
        if nextitem is None and self._current is not None:
            config = item.config
            reports = [phase_report(config, r, self._reports) for r in self._reports]
            self.channel.send({"type": "test_partial", "index": self._current, "reports": reports})

    def pytest_runtest_logstart(self, nodeid, location):
        if self._replay_all and self._replay is not None:
            self._replay.append({"hook": "logstart", "nodeid": nodeid, "location": location})

    def pytest_runtest_logfinish(self, nodeid, location):
        if self._replay_all and self._replay is not None:
            self._replay.append({"hook": "logfinish", "nodeid": nodeid, "location": location})

    @pytest.hookimpl(tryfirst=True)  # before junitxml and others read the captured output
    def pytest_runtest_logreport(self, report):
        if report.sections:
            report.sections = [(name, cut(text, MAX_SECTION)) for name, text in report.sections]
        if self._replay is not None and (self._replay_all or hypothesis.marked(report)):
            # As xdist's workers serialise reports for its controller.
            data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
            data.update(
                item_index=self._current,
                worker_id=self.identity["workerid"],
                testrun_uid=self.identity["testrunuid"],
            )
            self._replay.append({"hook": "logreport", "data": data})
        self._reports.append(report)
        if self._phase is not None and report.when != "teardown":
            # After a passed setup comes the call; after the call or a failed setup, teardown.
            self._phase.enter(self._phase.index, CALL if report.when == "setup" and report.passed else TEARDOWN)

    def pytest_warning_recorded(self, warning_message, when, nodeid, location):
        if self._replay_all and self._replay is not None:
            self._replay.append(
                {
                    "hook": "warning",
                    "warning": warning_data(warning_message),
                    "when": when,
                    "nodeid": nodeid,
                    "location": location,
                }
            )
        self._warnings.append(warning_entry(self.config, warning_message, nodeid, location))

    # -- the end --------------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionfinish(self, session):
        """Once every other plugin has finished the session (pytest's runner tears down what
        is left of the session fixtures), the worker is done: a kill after this loses nothing."""
        syrupy.report_as_a_worker(session.config, self.identity)
        if not self.identity.get("distributed"):
            terminal.worker_summaries_only(session.config, self)
            self._forward_summary = True
        result = yield
        self.channel.send(
            {
                "type": "worker_done",
                "workeroutput": to_wire(getattr(session.config, "workeroutput", {})),
                "junit_properties": getattr(junitxml.logxml(session.config), "global_properties", []),
                "warnings": self.take_warnings(),
            }
        )
        return result

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter):
        """Under ``-n 0``, the summaries of plugins that only the worker can print (see
        ``terminal.worker_summaries_only``) go to the controller."""
        if not self._forward_summary:
            return (yield)
        return (yield from terminal.forward_summary(self.channel, terminalreporter, 0))

    # -- the loop -------------------------------------------------------------------------------

    def run_tests(self, session):
        """Run the items the controller sends, each once its successor is known (see Inbox)."""
        benchmark.one_warning(session.config)
        items = session.items
        inbox = Inbox(self.channel, threaded=bool(self.identity.get("steals")))
        limits = Limits(self.identity)
        while True:
            taken = inbox.take()
            if taken is None:
                break
            index, next_index = taken
            item = items[index]
            nextitem = items[next_index] if next_index is not None else None
            self._reports = []
            self._replay = [] if self.identity.get("replay") else None
            junit = junitxml.Delta(session.config)
            if self.identity.get("report_starts"):
                self.channel.send({"type": "test_start", "index": index})
            self._current = index
            if self._phase is not None:
                self._phase.enter(index, SETUP)
            try:
                item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            except pytest.exit.Exception as exc:
                # pytest.exit() ends the session: what the test reported so far goes to the
                # controller, which stops the run; pytest then finishes the session as usual.
                self._send_done(session, index, junit, exit=session_exit(exc, nextitem is None))
                raise
            except KeyboardInterrupt as exc:
                # Raised by the test (or Ctrl-C): pytest stops the session, exit status 2.
                self._send_done(session, index, junit, exit=interrupt_exit(exc))
                raise
            if session.shouldfail or session.shouldstop:
                # This worker alone reached --maxfail (or a plugin asked to stop): stop at
                # once, as pytest does, rather than run what is queued until the controller
                # says so.
                inbox.finish()
            recycle = limits.reached()
            if recycle is not None:
                # Checked here, between tests, so that nothing more runs in this process; what
                # it holds goes to its replacement (see the protocol's ``recycle``).
                inbox.finish()
            self._send_done(session, index, junit, **({"recycle": recycle} if recycle else {}))

    def _send_done(self, session, index: int, junit, **extra) -> None:
        """Sends the test's reports. Until they are sent the state file says "reporting", so a
        crash meanwhile is blamed on this test, which must not run again."""
        if self._phase is not None:
            self._phase.enter(index, REPORTING)
        reports = self._reports
        stash = session.items[index].stash
        found = stash.get(leaks.FOUND, None)
        if found is not None:
            del stash[leaks.FOUND]  # a retry of the test in this worker finds its own
        msg = {"type": "test_done", "index": index, "reports": test_reports(session.config, reports)}
        if any(isinstance(r, dict) for r in msg["reports"]):
            msg["headline"] = reports[0].head_line  # a plain pass's is never shown
        # What most tests have none of is left out.
        for key, value in (
            ("warnings", self.take_warnings()),
            ("junit", junit.take()),
            ("replay", self._replay),
            ("leaks", found),
        ):
            if value:
                msg[key] = value
        self.channel.send({**msg, **extra})
        if self._phase is not None:
            self._phase.enter(index, IDLE)

    def take_warnings(self) -> list:
        """The warnings recorded since they were last taken."""
        taken, self._warnings = self._warnings, []
        return taken


class Limits:
    """``--max-worker-tests`` and ``--max-worker-rss``: when this worker should end its session
    and be replaced by a fresh process (suites that leak memory or state)."""

    def __init__(self, identity: dict) -> None:
        self._tests_left = identity.get("max_tests")
        self._max_rss = identity.get("max_rss")

    def reached(self) -> dict | None:
        """After a test: the protocol's ``recycle`` if it took the worker to a limit."""
        if self._tests_left is not None:
            self._tests_left -= 1
            if self._tests_left <= 0:
                return {"reason": "tests"}
        if self._max_rss is not None:
            rss = resident_bytes()
            if rss > self._max_rss:
                return {"reason": "rss", "rss": rss}
        return None


def resident_bytes() -> int:
    """This process's resident memory now; where ``/proc`` is missing (macOS), its peak, which
    only errs towards recycling sooner."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes there, KiB elsewhere


class Inbox:
    """The tests this worker was sent and has not started, in order.

    pytest decides which fixtures to tear down from ``nextitem``, so a test is only taken once
    its successor is known, or once the controller has said no more will come. Under
    worksteal the controller may ask for tests back while one runs, and that test may wait for
    what the thief's last test holds (a lock its class fixture took, released at teardown,
    which waits for a successor the steal would bring): there a thread reads the channel and
    answers ``steal`` at once, as xdist's workers answer on execnet's thread. Elsewhere
    messages are read between tests, and the worker stays one thread as plain pytest is (a
    test that forks would otherwise get Python 3.12's warning about forking threads): under
    load a steal is answered between tests, and the controller stops waiting for the answer
    after a while (``STEAL_PATIENCE`` in the scheduler).
    """

    def __init__(self, channel: Channel, threaded: bool) -> None:
        self._channel = channel
        self._queue: collections.deque[int] = collections.deque()
        self._finishing = False
        self._failure: BaseException | None = None
        self._changed = threading.Condition()  # an RLock: the unthreaded take() reads in it
        self._threaded = threaded
        if threaded:
            channel.read_in_thread(self._take_message)

    def take(self) -> tuple[int, int | None] | None:
        """The next test and its successor (None when no more will come); None when done."""
        with self._changed:
            while len(self._queue) < 2 and not self._finishing:
                if self._threaded:
                    # The reader may have failed (the controller gone) before this wait.
                    if self._failure is not None:
                        read_failed(self._failure)
                    self._changed.wait()
                else:
                    self._take_message(self._channel.recv())
            while not self._threaded and self._channel.ready():
                self._take_message(self._channel.recv())
            if not self._queue:
                return None
            index = self._queue.popleft()
            return index, (self._queue[0] if self._queue else None)

    def finish(self) -> None:
        """Run nothing more that is queued."""
        with self._changed:
            self._queue.clear()
            self._finishing = True

    def _take_message(self, msg) -> bool:
        """Acts on a message for the test loop; False for any other (a run-once reply)."""
        with self._changed:
            if isinstance(msg, BaseException):
                self._failure = msg
            elif msg["type"] == "run":
                # Once finishing (a recycle, --maxfail), tests sent before the controller knew
                # are not run here: it takes back whatever this worker held unfinished.
                if not self._finishing:
                    self._queue.extend(msg["indices"])
            elif msg["type"] == "shutdown":
                self._finishing = True
                if msg.get("discard"):
                    self._queue.clear()
            elif msg["type"] == "steal":
                # The head may already be the running test's nextitem: never give it away.
                count = min(msg["count"], max(len(self._queue) - 1, 0))
                released = [self._queue.pop() for _ in range(count)][::-1]
                self._channel.send({"type": "released", "indices": released})
            else:
                return False
            self._changed.notify()
            return True


IDLE, SETUP, CALL, TEARDOWN, REPORTING = range(5)


class PhaseFile:
    """The test and phase this worker is in, in a file both sides map (see the protocol's
    ``state_file``): written as tests go, read by the controller only after a crash."""

    def __init__(self, path: str) -> None:
        import mmap

        fd = open_private(path, os.O_RDWR)
        try:
            os.ftruncate(fd, 16)
            self.map = mmap.mmap(fd, 16)
        finally:
            os.close(fd)
        self.index = 0

    def enter(self, index: int, phase: int) -> None:
        self.index = index
        struct.pack_into("<QB", self.map, 0, index, phase)


def open_private(path: str, flags: int) -> int:
    """Opens (creating it) a file in the run's private directory that only this user may read
    or write; the mode is set explicitly, whatever the umask."""
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def _no_debugger(config) -> None:
    """``--pdb`` and ``--trace`` wait for commands from a terminal, which a worker does not
    have: the controller runs those tests again on its own terminal (see debug.Foreground)."""
    config.option.usepdb = False  # pytest's runner and unittest support read it too
    config.option.trace = False
    for name in ("pdbinvoke", "pdbtrace"):
        plugin = config.pluginmanager.get_plugin(name)
        if plugin is not None:
            config.pluginmanager.unregister(plugin)


def send_output_to_controller(config, path: str, identity: dict) -> None:
    """Point this forked worker's stdout and stderr at the controller, which prefixes each
    line with the worker id.

    pytest's global capture must be restarted around it: the collector's capture files are
    shared by every fork (one file offset for all), so each worker needs files of its own, and
    the new capture must save the redirected descriptors to restore between tests."""
    capman = config.pluginmanager.get_plugin("capturemanager")
    if capman is not None:
        capman.stop_global_capturing()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall(frame(hello("output", identity)))
    sys.stdout.flush()
    sys.stderr.flush()
    for fd in (1, 2):
        os.dup2(sock.fileno(), fd)
    sock.close()
    line_buffered()
    _fatal_errors_to(os.dup(2))
    if capman is not None:
        capman.start_global_capturing()


_fatal_errors_file = None  # kept open for faulthandler, which holds only its descriptor


def _fatal_errors_to(fd: int) -> None:
    """Where Python writes the stack of a fatal error (segfault, abort): a descriptor capture
    never replaces, so the controller receives it and can show it with the crash."""
    global _fatal_errors_file
    import faulthandler

    _fatal_errors_file = os.fdopen(fd, "w")
    faulthandler.enable(file=_fatal_errors_file, all_threads=True)


def line_buffered() -> None:
    """Output reaches the controller through a pipe or socket; flush it line by line."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
