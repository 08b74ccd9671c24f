"""shoal's side inside Python: a pytest plugin that the shoal binary carries and hands over.

One process (the *collector*) configures pytest and collects the suite once, sends the
collection to the controller, then forks the workers on request; each worker runs the items
the controller sends it through pytest's own ``pytest_runtest_protocol``. Where forking is not
possible the controller spawns workers that collect for themselves (``role == "worker"``).

Everything crosses one framed socket per process; the format is documented in
``docs/protocol.md`` and must change together with ``crates/shoal-protocol``.
"""

from __future__ import annotations

import collections
import functools
import io
import json
import os
import queue
import select
import signal
import socket
import struct
import sys
import threading
import typing
import uuid
from pathlib import Path

import pytest

# Private pytest and pluggy APIs this plugin relies on: check each against a new pytest
# (requirements-oldest.txt pins the oldest supported one, requirements-test.txt the newest).
#   _pytest._io.TerminalWriter and its ``_file``     rendering reports as pytest's terminal would
#   _pytest.terminal: getreportopt, pytest_report_teststatus, running_on_ci
#                                                    the -r characters, default status letters,
#                                                    CI-aware summary truncation
#   TerminalReporter._tw                             silencing a worker's terminal
#   _pytest.pathlib.bestrelpath                      node id display relative to the invocation
#   _pytest.fixtures.pytest_fixture_setup            a run-once fixture's own setup
#   _pytest.junitxml.xml_key (config.stash)          the collector's LogXML, unregistered
#   _pytest.reports.TestReport                       the report for a test its worker's crash ended
#   _pytest.warnings.warning_record_to_str           warnings as pytest's summary prints them
#   Cache._cachedir                                  the cache directory the controller writes
#   TempPathFactory._given_basetemp / _basetemp      each worker's own --basetemp
#   OptionGroup._addoption                           xdist's short options (-n, -d, -f)
#   pluggy HookCaller._remove_plugin                 taking reporters off a forked worker's hooks

PROTOCOL_VERSION = 5
MAX_FRAME_LEN = 64 << 20
_HEADER = struct.Struct(">I")
# What a report carries at most, in bytes of UTF-8: each captured output or log section, and
# each rendered report, crash message or JUnit text. Longer ones keep their beginning and
# their end (see _cut), so a test's report stays far below MAX_FRAME_LEN whatever it prints.
MAX_SECTION = 1 << 20
MAX_TEXT = 4 << 20

# pytest 9 shows a failure given as plain text (a strict xpass) with that text in the short
# summary; older ones show no message for it.
_TEXT_IS_MESSAGE = pytest.version_tuple >= (9,)


class Channel:
    """Length-prefixed JSON frames over the controller's Unix socket."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self._buf = bytearray()
        # Messages that arrived while waiting for a particular reply, for the test loop.
        self._deferred: collections.deque = collections.deque()
        # Once a thread reads the socket (see read_in_thread): what it left for recv_reply.
        self._replies: queue.SimpleQueue | None = None
        self._send_lock = threading.Lock()

    def send(self, msg: dict) -> None:
        data = json.dumps(msg, separators=(",", ":")).encode()
        with self._send_lock:
            self.sock.sendall(_HEADER.pack(len(data)) + data)

    def _frame(self):
        if len(self._buf) < 4:
            return None
        (size,) = _HEADER.unpack_from(self._buf)
        if size > MAX_FRAME_LEN:
            raise RuntimeError(f"shoal: frame of {size} bytes from the controller is too large")
        if len(self._buf) < 4 + size:
            return None
        data = bytes(self._buf[4 : 4 + size])
        del self._buf[: 4 + size]
        return json.loads(data)

    def ready(self) -> bool:
        """Whether a message can be read without blocking."""
        if self._deferred or self._frame_ready():
            return True
        return bool(select.select([self.sock], [], [], 0)[0])

    def _frame_ready(self) -> bool:
        return len(self._buf) >= 4 and len(self._buf) >= 4 + _HEADER.unpack_from(self._buf)[0]

    def recv(self) -> dict:
        if self._deferred:
            return self._deferred.popleft()
        return self._recv_frame()

    def recv_reply(self, *kinds: str) -> dict:
        """The next message of one of ``kinds``; others wait for :meth:`recv`."""
        while True:
            msg = self._recv_frame() if self._replies is None else self._replies.get()
            if isinstance(msg, BaseException):
                _read_failed(msg)
            if msg["type"] in kinds:
                return msg
            self._deferred.append(msg)

    def read_in_thread(self, take) -> None:
        """From now on a thread reads every message and gives it to ``take``; what ``take``
        declines (returns False for) waits for :meth:`recv_reply`. A failure to read, the
        controller's end included, reaches whoever waits next, through ``take(exc)`` and
        :meth:`recv_reply`, rather than ending the process mid-test."""
        self._replies = queue.SimpleQueue()
        while self._deferred:
            msg = self._deferred.popleft()
            if not take(msg):
                self._replies.put(msg)

        def read() -> None:
            try:
                while True:
                    msg = self._read_frame()
                    if not take(msg):
                        self._replies.put(msg)
            except BaseException as exc:
                take(exc)
                self._replies.put(exc)

        threading.Thread(target=read, name="shoal-channel", daemon=True).start()

    def _recv_frame(self) -> dict:
        try:
            return self._read_frame()
        except EOFError as exc:
            _read_failed(exc)

    def _read_frame(self) -> dict:
        """The next message; EOFError once the controller is gone."""
        while True:
            msg = self._frame()
            if msg is not None:
                return msg
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError
            self._buf += chunk


def _read_failed(exc: BaseException) -> typing.NoReturn:
    """Reading from the controller failed: a controller that is gone ends the process, as there
    is nothing left to do for it; anything else is raised."""
    if isinstance(exc, EOFError):
        os._exit(3)
    raise exc


def _cut(text: str, limit: int) -> str:
    """``text``, or when it is longer than ``limit`` bytes its first and last halves around a
    ``[... N bytes cut ...]`` line."""
    if len(text) * 4 <= limit:  # no character takes more than 4 bytes
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    # A character split at either edge is dropped whole, and counted as cut.
    head = data[: limit // 2].decode("utf-8", "ignore")
    tail = data[-(limit // 2) :].decode("utf-8", "ignore")
    kept = len(head.encode("utf-8", "surrogatepass")) + len(tail.encode("utf-8", "surrogatepass"))
    return f"{head}\n[... {len(data) - kept} bytes cut ...]\n{tail}"


def _render(config, rep, reports) -> str:
    """A failed report's section body, exactly as pytest's terminal summary prints it."""
    out = _pytest_terminalwriter(config, _terminal_writer(config))
    if config.getoption("tbstyle", "auto") == "line":
        out.line(_crashline(rep))
        return out._file.getvalue()
    workerinput = getattr(config, "workerinput", None)
    if workerinput:
        # xdist's report.toterminal starts each section with the worker that ran the test.
        version = "%s.%s.%s" % sys.version_info[:3]
        out.line(f"[{workerinput['workerid']}] {sys.platform} -- Python {version} {sys.executable}")
    rep.toterminal(out)
    showcapture = config.getoption("showcapture", "all")
    if showcapture != "no":
        teardown = [r for r in reports if r.when == "teardown" and r is not rep]
        sections = list(rep.sections) + [
            (name, text) for r in teardown for name, text in r.sections if "teardown" in name
        ]
        for name, text in sections:
            if showcapture != "all" and showcapture not in name:
                continue
            out.sep("-", name)
            out.line(text[:-1] if text.endswith("\n") else text)
    return out._file.getvalue()


# Under ``-p no:terminal`` pytest has no terminal reporter, and none of the options it adds
# (``-v``, ``-r``, ``--tb``, ``--color``...): the helpers below fall back to their defaults.


def _has_terminal(config) -> bool:
    return config.pluginmanager.get_plugin("terminalreporter") is not None


def _terminal_writer(config):
    """pytest's terminal writer, or a default one."""
    if _has_terminal(config):
        return config.get_terminal_writer()
    from _pytest._io import TerminalWriter

    return TerminalWriter()


def _reportopt(config) -> str:
    """``-r``'s characters as pytest's terminal reads them (``wfE`` by default)."""
    if not _has_terminal(config):
        return "wfE"
    from _pytest.terminal import getreportopt

    return getreportopt(config)


def _pytest_terminalwriter(config, like):
    from _pytest._io import TerminalWriter

    out = TerminalWriter(io.StringIO())
    out.hasmarkup = like.hasmarkup
    out.code_highlight = like.code_highlight
    out.fullwidth = like.fullwidth
    return out


def _crashline(rep) -> str:
    try:
        return str(rep.longrepr.reprcrash)
    except AttributeError:
        return str(rep.longrepr)[:50]


@functools.lru_cache(maxsize=1)
def _wants_passes(config) -> bool:
    """Whether ``-rP`` (or ``-rA``) asks for the captured output of passing tests."""
    return "P" in _reportopt(config)


@functools.lru_cache(maxsize=1)
def _teststatus_hook(config):
    """``pytest_report_teststatus`` without pytest-sugar's answers, which are for its own
    terminal reporter (a category for every phase, passing setups included, that it then
    filters): shoal's terminal replaces that reporter, and counts tests as pytest does."""
    sugar = config.pluginmanager.get_plugin("sugar")
    if sugar is None:
        return config.hook.pytest_report_teststatus
    return config.pluginmanager.subset_hook_caller("pytest_report_teststatus", [sugar])


def _report(config, rep, reports) -> dict:
    """What the controller needs of one phase report: status words, timing, rendered text."""
    status = _teststatus_hook(config)(report=rep, config=config)
    if status is None:  # -p no:terminal: the terminal plugin's own answer is the default
        from _pytest.terminal import pytest_report_teststatus

        status = pytest_report_teststatus(rep)
    cat, letter, word = status
    if isinstance(word, tuple):
        word = word[0]
    msg = {
        "when": rep.when,
        "outcome": rep.outcome,
        "duration": getattr(rep, "duration", 0.0),  # a CollectReport has none
        "category": cat,
        "letter": letter,
        "word": word,
    }
    if hasattr(rep, "wasxfail"):
        msg["wasxfail"] = str(rep.wasxfail)
    if reports and rep.head_line != reports[0].head_line:
        msg["headline"] = rep.head_line  # a subtest's: `test_sub [check] (i='1')`
    if rep.sections:
        msg["sections"] = rep.sections
    if cat == "passed" and rep.when == "call" and rep.sections and _wants_passes(config):
        msg["text"] = _cut(_render(config, rep, reports), MAX_TEXT)  # for -rP's PASSES section
    elif rep.failed or (cat in ("failed", "error")):
        msg["text"] = _cut(_render(config, rep, reports), MAX_TEXT)
        try:
            longrepr = rep.longrepr
            text_is_message = isinstance(longrepr, str) and _TEXT_IS_MESSAGE
            message = longrepr if text_is_message else longrepr.reprcrash.message
            msg["message"] = _cut(message, MAX_TEXT)
        except AttributeError:
            pass
    elif rep.skipped and isinstance(rep.longrepr, tuple):
        from _pytest.pathlib import bestrelpath

        path, lineno, reason = rep.longrepr
        if rep.when == "setup" and "skip" in rep.keywords and "pytestmark" not in rep.keywords:
            lineno = None  # pytest folds such skips per file, see _folded_skips
        msg["skip"] = [bestrelpath(config.invocation_params.dir, Path(path)), lineno, reason]
    return msg


@pytest.fixture(scope="session")
def worker_id(request):
    """pytest-xdist's fixture: ``gw0``, ``gw1``... in a worker, ``master`` without workers."""
    workerinput = getattr(request.config, "workerinput", None)
    return workerinput["workerid"] if workerinput else "master"


@pytest.fixture(scope="session")
def testrun_uid(request):
    """pytest-xdist's fixture: one hex id shared by every worker of a run."""
    workerinput = getattr(request.config, "workerinput", None)
    return workerinput["testrunuid"] if workerinput else uuid.uuid4().hex


class ShoalPlugin:
    """The state of one shoal process; registered with pytest as a plugin."""

    def __init__(self, channel: Channel, role: str, worker: dict | None) -> None:
        self.channel = channel
        self.role = role
        self.worker = worker
        self.config = None
        self._reports: list = []
        self._warnings: list = []
        self._current = None  # the collection index of the test running in this worker
        self._forward_summary = False
        self._replay = None  # with the identity's "replay": this test's report hook calls
        self._replay_wanted = False  # the collector's plugins read reports
        self._nodes: dict = {}  # the collector's stand-ins for xdist's worker nodes
        self._exitstatus = None  # the run's, from the controller's stop
        self._known_warnings = 0  # in the finished collector's stats, already reported
        self._configured_output: dict = {}  # workeroutput as collection left it, for forks

    def pytest_addhooks(self, pluginmanager):
        """xdist's hooks, whose own registration ``-p no:xdist`` skips: a conftest that
        implements them must load as it does under xdist. shoal's own copy of the specs,
        even with xdist installed: importing ``xdist`` here, before pytest's assertion
        rewriting has seen its modules, makes pytest warn that it cannot rewrite them."""
        pluginmanager.add_hookspecs(_XdistHookSpecs)
        if not pluginmanager.is_blocked(_XDIST_STAND_IN):
            # Plugins ask ``hasplugin("xdist.plugin")`` before implementing xdist's hooks
            # (syrupy's pytest_testnodedown): shoal calls them, so it answers for xdist.
            pluginmanager.register(_XdistStandIn(), _XDIST_STAND_IN)

    # -- options: the xdist flags a project's addopts may hold -------------------------------

    def pytest_addoption(self, parser):
        group = parser.getgroup("shoal", "shoal (parallel runs; options also read from addopts)")
        # pytest reserves lowercase short options for itself; xdist registers -n the same way.
        group._addoption("-n", "--numprocesses", dest="numprocesses", metavar="N", default=None)
        group.addoption("--maxprocesses", dest="maxprocesses", type=int, default=None)
        group.addoption("--dist", dest="dist", default=None)
        group.addoption("--max-worker-restart", dest="maxworkerrestart", default=None)
        # The rest of xdist's flags, so addopts written for xdist parse (see _xdist_flags).
        group._addoption("-d", action="store_true", dest="distload", default=False)
        group.addoption("--tx", dest="tx", action="append", default=[], metavar="xspec")
        group.addoption("--px", dest="px", action="append", default=[], metavar="xspec")
        group.addoption("--loadscope-reorder", dest="loadscopereorder", action="store_true", default=True)
        group.addoption("--no-loadscope-reorder", dest="loadscopereorder", action="store_false")
        group.addoption("--maxschedchunk", dest="maxschedchunk", type=int, default=None)
        group.addoption("--testrunuid", dest="testrunuid", default=None)
        group.addoption("--rsyncdir", dest="rsyncdir", action="append", default=[])
        group.addoption("--rsyncignore", dest="rsyncignore", action="append", default=[])
        group._addoption("-f", "--looponfail", dest="looponfail", action="store_true", default=False)
        for name in ("rsyncdirs", "rsyncignore", "looponfailroots"):
            parser.addini(name, "pytest-xdist's; shoal has no rsync or looponfail", type="paths")
        # The name pytest-timeout users already have; shoal's controller enforces it.
        parser.addini("timeout", "per-test timeout in seconds, enforced by shoal", default=None)
        parser.addini(
            "shoal_run_once",
            "session fixtures shoal sets up once per run and shares with every worker",
            type="linelist",
            default=[],
        )
        parser.addini(
            "shoal_serial_marker",
            "marker of tests that shoal runs with no other test beside them",
            default="serial",
        )

    @pytest.hookimpl(tryfirst=True)  # plugins read workerinput in their own pytest_configure
    def pytest_configure(self, config):
        self.config = config
        _xdist_flags(config)
        self._dist_given = config.option.dist
        config.option.dist = self._dist_given or ("load" if self._distributed(config) else "no")
        config.addinivalue_line(
            "markers", "xdist_group(name): run tests of the same group on one worker"
        )
        config.addinivalue_line("markers", "timeout(seconds): fail the test after this long")
        config.addinivalue_line("markers", "flaky(reruns=N): run a failing test up to N more times")
        config.addinivalue_line(
            "markers", f"{config.getini('shoal_serial_marker')}: shoal runs it with no other test"
        )
        config.addinivalue_line(
            "markers", "resource(name, limit=1): at most `limit` such tests run at once"
        )

    @pytest.hookimpl(tryfirst=True)
    def pytest_cmdline_main(self, config):
        """Before any plugin configures: xdist's workers have ``workerinput`` and
        ``workeroutput`` from the start, and plugins configure with them (pytest-metadata
        is tryfirst, and registered after shoal)."""
        if self.worker is not None:
            _take_identity(config, self.worker)
            seed = self.worker.get("workerinput", {}).get("randomly_seed")
            if seed is not None and not hasattr(config, "workerinput"):
                # -n 0, spawned: pytest-randomly reads the seed from workerinput only in
                # xdist's workers; this one must shuffle as the collector did.
                config.option.randomly_seed = seed
        elif self.role == "collector":
            _watch_config(config)
            # What the suite puts in config.workeroutput before the fork (pytest-metadata's
            # metadata, while configuring) is what each xdist worker's own configure and
            # collection put there: forked workers start with it (see _serve_forks).
            config.workeroutput = {}

    def pytest_internalerror(self):
        """A worker's internal error ends the run, as under xdist (its text is on stderr)."""
        if self.role == "worker" and self.channel is not None:
            try:
                self.channel.send({"type": "internal_error"})
            except OSError:
                pass  # the controller is gone: nobody to tell

    @pytest.hookimpl(tryfirst=True)  # before the terminal prints its header
    def pytest_sessionstart(self, session):
        if self.worker is not None:
            _quiet_worker(session.config, self.worker)

    def _distributed(self, config) -> bool:
        """Whether this run has xdist workers (not ``-n 0``): plugins read xdist's
        ``config.option.dist`` ("no" without workers; pytest-benchmark disables itself
        otherwise)."""
        if self.worker is not None:
            return bool(self.worker.get("distributed"))
        if self.role != "collector":
            return False
        numprocesses = os.environ.get("SHOAL_NUMPROCESSES") or config.option.numprocesses
        return str(numprocesses or "auto").strip() != "0"

    # -- the run -------------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        config = session.config
        if self.role == "debug":
            return None  # plain pytest, see _Foreground
        if self.role == "collector":
            collection_failed = (
                session.testsfailed and not config.option.continue_on_collection_errors
            )
            if collection_failed or config.option.collectonly or not session.items:
                return None  # pytest's own loop reports it; the controller reads the exit code
            self._send_collection(session)
            os.environ.__class__ = _EnvironWatch.__mro__[1]  # collection is over
            _unwatch_config(config)
            self._configured_output = config.__dict__.pop("workeroutput", {})
            self._warnings.clear()  # sent with the collection; forks must not send them again
            if self._serve_forks(session):
                _end_as(session, self._exitstatus)
                return True  # the parent: the run is over
        else:
            nodeids = [item.nodeid for item in session.items]
            self.channel.send({"type": "ready", "collection": nodeids})
        self._run_tests(session)
        return True

    @pytest.hookimpl(tryfirst=True)
    def pytest_fixture_setup(self, fixturedef, request):
        """Run-once fixtures: the first worker to need one sets it up, the others wait for its
        JSON value; its owner tears it down after every other worker is done."""
        if self.worker is None or self.role != "worker" or fixturedef.scope != "session":
            return None
        name = fixturedef.argname
        if name not in _run_once_names(request.config):
            return None
        self.channel.send({"type": "fixture_request", "name": name})
        reply = self.channel.recv_reply("fixture_run", "fixture_value", "fixture_error")
        if reply["type"] == "fixture_value":
            fixturedef.cached_result = (reply["value"], fixturedef.cache_key(request), None)
            return reply["value"]
        if reply["type"] == "fixture_error":
            _fail_setup(fixturedef, request, _setup_failure(name, reply))
        from _pytest.fixtures import pytest_fixture_setup as set_up

        try:
            value = set_up(fixturedef, request)
        except BaseException as exc:
            self.channel.send({"type": "fixture_failed", "name": name, **_setup_outcome(exc)})
            raise
        problem = _json_problem(value)
        if problem is not None:
            error = RunOnceSetupError(
                f"run-once fixture {name!r} returned a value of type {type(value).__name__!r}, "
                f"which shoal cannot pass to other workers: it must be JSON-serializable ({problem})"
            )
            self.channel.send({"type": "fixture_failed", "name": name, **_setup_outcome(error)})
            _fail_setup(fixturedef, request, error)
        self.channel.send({"type": "fixture_ready", "name": name, "value": value})
        fixturedef.addfinalizer(lambda: self._await_release(name))
        return value

    def _await_release(self, name: str) -> None:
        """Finalizers run last-in first-out: this one holds the fixture's own teardown back
        until the controller says no other worker can still be using it."""
        self.channel.send({"type": "fixture_done", "name": name})
        self.channel.recv_reply("fixture_release")

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter):
        """In the finished collector, what other plugins add to the terminal summary (a
        coverage table, say) goes to the controller, which prints it where pytest would."""
        if not self._forward_summary:
            return (yield)
        # Warnings since the collection (the cache's, at session end): the controller lists
        # and counts them with the rest.
        stats = terminalreporter.stats.get("warnings", [])
        warnings = _warning_reports(self.config, stats[self._known_warnings :])
        out = terminalreporter._tw._file
        start = len(out.getvalue())
        result = yield
        text = out.getvalue()[start:]
        if text.strip() or warnings:
            self.channel.send({"type": "terminal_summary", "text": text, "warnings": warnings})
        return result

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item, nextitem):
        """Before the last test's teardown, which also tears the session down, its outcome so
        far goes to the controller: a crash in session teardown must not lose a passed test."""
        if nextitem is None and self._current is not None:
            config = item.config
            reports = [_report(config, r, self._reports) for r in self._reports]
            self.channel.send({"type": "test_partial", "index": self._current, "reports": reports})

    def pytest_runtest_logstart(self, nodeid, location):
        if self._replay is not None:
            self._replay.append({"hook": "logstart", "nodeid": nodeid, "location": location})

    def pytest_runtest_logfinish(self, nodeid, location):
        if self._replay is not None:
            self._replay.append({"hook": "logfinish", "nodeid": nodeid, "location": location})

    @pytest.hookimpl(tryfirst=True)  # before junitxml and others read the captured output
    def pytest_runtest_logreport(self, report):
        if self.role == "collector":
            return  # a report replayed in the collector (see _replay_events)
        report.sections = [(name, _cut(text, MAX_SECTION)) for name, text in report.sections]
        if self._replay is not None:
            # As xdist's workers serialise reports for its controller.
            data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
            data.update(
                item_index=self._current,
                worker_id=self.worker["workerid"],
                testrun_uid=self.worker["testrunuid"],
            )
            self._replay.append({"hook": "logreport", "data": data})
        self._reports.append(report)
        if _phase is not None and report.when != "teardown":
            # After a passed setup comes the call; after the call or a failed setup, teardown.
            _phase.enter(_phase.index, _CALL if report.when == "setup" and report.passed else _TEARDOWN)

    def pytest_warning_recorded(self, warning_message, when, nodeid, location):
        if self.role == "collector":
            return  # sent with the collection, or replayed from a worker
        if self._replay is not None:
            self._replay.append(
                {
                    "hook": "warning",
                    "warning": _warning_data(warning_message),
                    "when": when,
                    "nodeid": nodeid,
                    "location": location,
                }
            )
        self._warnings.append(_warning(self.config, warning_message, nodeid, location))

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionfinish(self, session):
        """Once every other plugin has finished the session (pytest's runner tears down what
        is left of the session fixtures), the worker is done: a kill after this loses nothing."""
        if self.role == "worker" and self.worker is not None:
            _syrupy_reports_as_a_worker(session.config, self.worker)
            if not self.worker.get("distributed"):
                _worker_summaries_only(session.config, self)
                self._forward_summary = True
        result = yield
        if self.role == "worker" and self.worker is not None:
            self.channel.send(
                {
                    "type": "worker_done",
                    "workeroutput": _wire_value(getattr(session.config, "workeroutput", {})),
                    "junit_properties": getattr(_logxml(session.config), "global_properties", []),
                    "warnings": self._take_warnings(),
                }
            )
        return result

    def _send_collection(self, session):
        config = session.config
        from _pytest.terminal import running_on_ci

        tw = _terminal_writer(config)
        verbose = config.getoption("verbose", 0)
        unsafe = _fork_unsafe_reason()
        rerunfailures = config.pluginmanager.hasplugin("rerunfailures")
        serial_marker = config.getini("shoal_serial_marker")
        items = []
        for item in session.items:
            entry = {
                "nodeid": item.nodeid,
                "file": item.nodeid.split("::", 1)[0],
                "scope": _scope_of(item.nodeid),
                "group": _group_name(item),
            }
            shown = _cwd_relative(config, item.nodeid)
            if shown != item.nodeid:
                entry["display"] = shown
            timeout = _mark_value(item.get_closest_marker("timeout"), "timeout")
            if timeout is not None:
                entry["timeout"] = float(timeout)
            if item.get_closest_marker(serial_marker) is not None:
                entry["serial"] = True
            resources = [
                [str(_mark_value(mark, "name")), int(mark.kwargs.get("limit", 1))]
                for mark in item.iter_markers("resource")
            ]
            if resources:
                entry["resources"] = resources
            if not rerunfailures:  # with pytest-rerunfailures installed, its mark is its own
                reruns = _mark_value(item.get_closest_marker("flaky"), "reruns")
                if reruns is not None:
                    entry["reruns"] = int(reruns)
            items.append(entry)
        tmp = getattr(config, "_tmp_path_factory", None)
        logxml = _logxml(config)
        cache = getattr(config, "cache", None)
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        stats = reporter.stats if reporter is not None else {}
        sys.stdout.flush()
        self._replay_wanted = _reads_reports(config, self)
        self.channel.send(
            {
                "type": "collected",
                "replay": self._replay_wanted,
                "items": items,
                "fork_unsafe": unsafe,
                "identity_read": _IdentityWatch.first,
                "basetemp": str(tmp.getbasetemp()) if tmp else None,
                "settings": {
                    "numprocesses": config.option.numprocesses,
                    "dist": self._dist_given,
                    "maxprocesses": config.option.maxprocesses,
                    "verbose": verbose,
                    "reportchars": _reportopt(config),
                    "maxfail": config.option.maxfail or 0,
                    "tbstyle": config.getoption("tbstyle", "auto"),
                    "color": tw.hasmarkup,
                    "width": tw.fullwidth,
                    "full_summary": (running_on_ci() or verbose >= 2)
                    and not getattr(config.option, "force_short_summary", False),
                    "deselected": len(stats.get("deselected", [])),
                    "durations": config.option.durations,
                    "durations_min": config.option.durations_min,
                    "rootdir": str(config.rootpath),
                    "timeout": float(config.getini("timeout") or 0) or None,
                    "maxworkerrestart": config.option.maxworkerrestart,
                    "cache_dir": str(cache._cachedir) if cache is not None else None,
                    "junit": {
                        "path": logxml.logfile,
                        "suite_name": logxml.suite_name,
                        "timestamp": _junit_timestamp(logxml),
                        "prefix": logxml.prefix,
                        "suites_name": "pytest tests" if pytest.version_tuple >= (8, 4) else None,
                    }
                    if logxml is not None
                    else None,
                    "usepdb": bool(getattr(config.option, "usepdb", False)),
                    "trace": bool(getattr(config.option, "trace", False)),
                    "instafail": bool(getattr(config.option, "instafail", False)),
                    "terminal": _has_terminal(config),
                    "auto_num_workers": _auto_num_workers(config),
                    "loadscope_reorder": config.option.loadscopereorder,
                    "testrunuid": config.option.testrunuid,
                },
                "warnings": _warning_reports(config, stats.get("warnings", [])),
                "workerinput": _plugin_workerinput(config),
                # Collection errors (--continue-on-collection-errors): one report each.
                "collect_errors": [
                    {
                        "nodeid": r.nodeid,
                        "headline": r.head_line or r.nodeid,
                        "report": _report(config, r, [r]),
                    }
                    for r in stats.get("error", [])
                    if getattr(r, "when", None) == "collect"
                ],
                "junit": _JunitDelta.collected(config),
            }
        )

    def _serve_forks(self, session) -> bool:
        """Fork workers as the controller asks; True in the collector once it is told to stop.

        The collector is the parent of every forked worker's keeper (which exits as its worker
        did, see _start_worker_under_keeper), so it also reaps them and tells the controller how
        each one ended (the controller cannot wait on processes it did not start). It waits for
        those pids alone: children the suite started here (a conftest's subprocess) are the
        suite's to wait for, and orphans go to the keepers, not here. SIGCHLD wakes the loop
        through a pipe, so it never polls.
        """
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        old_handler = signal.signal(signal.SIGCHLD, lambda *_: None)
        children: dict[int, str] = {}
        collector = os.getpid()
        stopping = False
        # Without workers (-n 0) the run is plain pytest to plugins: no xdist node hooks.
        nodes = self._distributed(session.config)
        if nodes:
            session.config.hook.pytest_xdist_setupnodes(config=session.config, specs=[])
        if self._replay_wanted:
            _hand_reporting_over(session.config)  # replayed reports must not print here
        while not stopping or children:
            if stopping:
                select.select([wake_r], [], [])
                message_waiting = False
            elif self.channel._frame_ready():
                message_waiting = True
            else:
                readable = select.select([self.channel.sock, wake_r], [], [])[0]
                message_waiting = self.channel.sock in readable
            try:
                os.read(wake_r, 4096)
            except BlockingIOError:
                pass
            # Only the processes forked here: the suite's own children (a conftest's
            # subprocess) are for the suite to wait for.
            for pid, worker in list(children.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    del children[pid]
                    self._send_exit(worker, pid, status)
            if not message_waiting:
                continue
            msg = self.channel.recv()
            if msg["type"] == "stop":
                stopping = True
                self._exitstatus = msg.get("exitstatus")
            elif msg["type"] == "replay":
                self._replay_events(session, msg)
            elif msg["type"] == "node_down":
                self._node_down(session.config, msg)
            elif msg["type"] == "fork":
                identity = msg["identity"]
                node = _Node(session.config, identity["workerid"], workerinput=_workerinput(identity))
                if nodes:
                    session.config.hook.pytest_configure_node(node=node)
                self._nodes[identity["workerid"]] = node
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    os.close(wake_r)
                    os.close(wake_w)
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    self.channel.sock.close()
                    _start_worker_under_keeper(collector)
                    _send_output_to_controller(session.config, self.channel.path, msg["identity"])
                    self.channel = Channel(self.channel.path)
                    self.role = "worker"
                    self.worker = {**identity, "workerinput": node.workerinput}
                    _take_identity(session.config, self.worker, self._configured_output)
                    if self._replay_wanted:
                        _drop_reporters(session.config, self)
                    _quiet_worker(session.config, self.worker)
                    _measure_coverage_as_worker(session.config)
                    self.channel.send({"type": "hello", **_hello("worker", self.worker)})
                    self.channel.send({"type": "ready", "collection": None})
                    return False
                children[pid] = identity["workerid"]
                self.channel.send({"type": "forked", "worker": identity["workerid"], "pid": pid})
                if nodes:
                    session.config.hook.pytest_testnodeready(node=node)
        signal.set_wakeup_fd(old_wakeup)
        signal.signal(signal.SIGCHLD, old_handler)
        os.close(wake_r)
        os.close(wake_w)
        logxml = _logxml(session.config)
        if logxml is not None:
            # The controller writes the run's file and names it; the collector's is nothing.
            from _pytest.junitxml import xml_key

            del session.config.stash[xml_key]
            session.config.pluginmanager.unregister(logxml)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if self._replay_wanted:
            # Plugins' summaries read the replayed stats; the controller already has the
            # warnings in them.
            self._known_warnings = len(reporter.stats.get("warnings", [])) if reporter else 0
        else:
            _hand_reporting_over(session.config)
            if reporter is not None:
                reporter.stats = {}  # the controller reports tests and warnings itself
        self._forward_summary = True
        return True

    def _node(self, config, workerid: str) -> "_Node":
        """The collector's one stand-in for a worker's xdist node (a spawned worker's is made
        when its first message about it arrives)."""
        node = self._nodes.get(workerid)
        if node is None:
            node = self._nodes[workerid] = _Node(config, workerid)
        return node

    def _node_down(self, config, msg: dict) -> None:
        """A worker finished its session (or died): ``pytest_testnodedown`` on the controlling
        side, with what the worker put in ``config.workeroutput``, as xdist calls it."""
        node = self._node(config, msg["worker"])
        if msg.get("workeroutput") is not None:
            node.workeroutput = _from_wire(msg["workeroutput"])  # a crashed worker's has none
        node.shutting_down = True
        hook = config.hook.pytest_testnodedown
        if not self._distributed(config):
            # -n 0: plain pytest has no nodes, but syrupy's worker report must come here.
            hook = config.pluginmanager.subset_hook_caller(
                "pytest_testnodedown",
                [impl.plugin for impl in hook.get_hookimpls() if _plugin_package(impl.plugin) != "syrupy"],
            )
        hook(node=node, error=msg.get("error"))

    def _replay_events(self, session, msg) -> None:
        """One test's report hook calls, made again here as pytest-xdist's controller makes
        them (its DSession): reports rebuilt by ``pytest_report_from_serializable`` carry
        their worker's ``node``; pytest's session counts failures and ``--maxfail`` itself."""
        config = session.config
        hook = config.hook
        node = self._node(config, msg["worker"])
        for event in msg["events"]:
            kind = event["hook"]
            if kind == "logreport":
                report = hook.pytest_report_from_serializable(config=config, data=event["data"])
                if isinstance(report.longrepr, list):
                    # A skip's (path, lineno, reason): JSON made the tuple a list (execnet,
                    # xdist's wire, keeps it), and pytest's junitxml and plugins want a tuple.
                    report.longrepr = tuple(report.longrepr)
                report.node = node
                _replay_logreport(config)(report=report)
            elif kind == "crash":
                # As xdist's controller reports a test its worker's crash ended: a failure
                # at "???" (pytest_handlecrashitem is not called: it wants xdist's scheduler).
                from _pytest.reports import TestReport

                nodeid = event["nodeid"]
                path = nodeid.split("::")[0]
                report = TestReport(nodeid, (path, None, path), {}, "failed", event["message"], "???")
                report.node = node
                _replay_logreport(config)(report=report)
            elif kind == "warning":
                location = event["location"]
                hook.pytest_warning_recorded.call_historic(
                    kwargs={
                        "warning_message": _warning_from_data(event["warning"]),
                        "when": event["when"],
                        "nodeid": event["nodeid"],
                        "location": tuple(location) if location else None,
                    }
                )
            else:
                getattr(hook, f"pytest_runtest_{kind}")(
                    nodeid=event["nodeid"], location=tuple(event["location"])
                )

    def _send_exit(self, worker: str, pid: int, status: int) -> None:
        msg = {"type": "worker_exited", "worker": worker, "pid": pid}
        if os.WIFSIGNALED(status):
            msg["signal"] = os.WTERMSIG(status)
        else:
            msg["code"] = os.waitstatus_to_exitcode(status)
        self.channel.send(msg)

    def _run_tests(self, session):
        """Run the items the controller sends, each once its successor is known (see _Inbox)."""
        _one_benchmark_warning(session.config)
        items = session.items
        inbox = _Inbox(self.channel, threaded=bool(self.worker.get("steals")))
        while True:
            taken = inbox.take()
            if taken is None:
                break
            index, next_index = taken
            item = items[index]
            nextitem = items[next_index] if next_index is not None else None
            self._reports = []
            self._replay = [] if self.worker.get("replay") else None
            junit = _JunitDelta(session.config)
            if self.worker.get("report_starts"):
                self.channel.send({"type": "test_start", "index": index})
            self._current = index
            if _phase is not None:
                _phase.enter(index, _SETUP)
            try:
                item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            except pytest.exit.Exception as exc:
                # pytest.exit() ends the session: what the test reported so far goes to the
                # controller, which stops the run; pytest then finishes the session as usual.
                self._send_done(session, index, junit, exit=_session_exit(exc, nextitem is None))
                raise
            except KeyboardInterrupt as exc:
                # Raised by the test (or Ctrl-C): pytest stops the session, exit status 2.
                self._send_done(session, index, junit, exit=_interrupt_exit(exc))
                raise
            if session.shouldfail or session.shouldstop:
                # This worker alone reached --maxfail (or a plugin asked to stop): stop at
                # once, as pytest does, rather than run what is queued until the controller
                # says so.
                inbox.finish()
            self._send_done(session, index, junit)

    def _send_done(self, session, index: int, junit, **extra) -> None:
        """Sends the test's reports. Until they are sent the state file says "reporting", so a
        crash meanwhile is blamed on this test, which must not run again."""
        if _phase is not None:
            _phase.enter(index, _REPORTING)
        reports = self._reports
        self.channel.send(
            {
                "type": "test_done",
                "index": index,
                "headline": reports[0].head_line if reports else None,
                "reports": [_report(session.config, r, reports) for r in reports],
                "warnings": self._take_warnings(),
                "junit": junit.take(),
                **({"replay": self._replay} if self._replay is not None else {}),
                **extra,
            }
        )
        if _phase is not None:
            _phase.enter(index, _IDLE)

    def _take_warnings(self) -> list:
        taken, self._warnings = self._warnings, []
        return taken


class _Inbox:
    """The tests this worker was sent and has not started, in order.

    pytest decides which fixtures to tear down from ``nextitem``, so a test is only taken once
    its successor is known, or once the controller has said no more will come. Under
    worksteal the controller may ask for tests back while one runs, and that test may wait for
    what the thief's last test holds (a lock its class fixture took, released at teardown,
    which waits for a successor the steal would bring): there a thread reads the channel and
    answers ``steal`` at once, as xdist's workers answer on execnet's thread. Elsewhere
    messages are read between tests, and the worker stays one thread as plain pytest is.
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
                        _read_failed(self._failure)
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


# The hooks through which plugins read a run's results in the controlling process.
_REPORT_HOOKS = (
    "pytest_runtest_logstart",
    "pytest_runtest_logreport",
    "pytest_runtest_logfinish",
    "pytest_warning_recorded",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
)


def _reads_reports(config, shoal) -> bool:
    """Whether a plugin or conftest, not pytest's own nor shoal's, implements a hook that
    reads reports: only then do workers send their reports for the collector to replay."""
    return any(
        impl.plugin is not shoal and not _builtin(impl.plugin)
        for name in _REPORT_HOOKS
        for impl in getattr(config.hook, name).get_hookimpls()
    )


def _drop_reporters(config, shoal) -> None:
    """A forked worker inherits the reporters plugins made in the collector's
    ``pytest_configure`` for the controlling process (pytest-html's, pytest-reportlog's,
    pytest-json-report's objects), which xdist's workers never have: they would write the
    run's report files a second time, with this worker's tests only. The collector's replay
    feeds them instead, so here they stop receiving reports; they stay registered, for their
    own ``pytest_unconfigure``. Modules and conftests keep their hooks: they serve workers too."""
    reporters = [
        impl.plugin
        for impl in config.hook.pytest_runtest_logreport.get_hookimpls()
        if not isinstance(impl.plugin, type(sys)) and impl.plugin is not shoal and not _builtin(impl.plugin)
    ]
    for name in (*_REPORT_HOOKS, "pytest_collectreport"):
        hook = getattr(config.hook, name)
        for plugin in {impl.plugin for impl in hook.get_hookimpls()}.intersection(reporters):
            hook._remove_plugin(plugin)  # what unregistering does, for these hooks alone


def _builtin(plugin) -> bool:
    """pytest's own plugins, and shoal's."""
    module = _plugin_module(plugin)
    return module == __name__ or module.startswith("_pytest.")


def _plugin_module(plugin) -> str:
    """The module a plugin comes from: itself, or its class's."""
    return plugin.__name__ if isinstance(plugin, type(sys)) else type(plugin).__module__


def _plugin_package(plugin) -> str:
    return _plugin_module(plugin).partition(".")[0]


def _hand_reporting_over(config) -> None:
    """The collector's terminal prints nothing: not the tests, nor pytest's own summary
    sections (the controller prints those), while other plugins' summaries still run and are
    forwarded (see ``pytest_terminal_summary``)."""
    _silence_terminal(config)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    for name in _PYTEST_SUMMARIES:
        if reporter is not None and hasattr(reporter, name):
            setattr(reporter, name, lambda *args, **kwargs: None)
    # pytest's other summaries (--durations) would read the replayed reports.
    hook = config.hook.pytest_terminal_summary
    for impl in hook.get_hookimpls():
        if impl.plugin is not reporter and _plugin_package(impl.plugin) == "_pytest":
            hook._remove_plugin(impl.plugin)


# pytest's own terminal summary sections, all in the controller's terminal.
_PYTEST_SUMMARIES = (
    "summary_errors",
    "summary_failures",
    "summary_xfailures",
    "summary_warnings",
    "summary_passes",
    "summary_xpasses",
    "short_test_summary",
)


@functools.lru_cache(maxsize=1)
def _replay_logreport(config):
    """``pytest_runtest_logreport`` for replayed reports, without pytest's junitxml: the
    controller writes the run's file (the collector's is unregistered once the run is over)."""
    logxml = _logxml(config)
    if logxml is None:
        return config.hook.pytest_runtest_logreport
    return config.pluginmanager.subset_hook_caller("pytest_runtest_logreport", [logxml])


def _end_as(session, exitstatus) -> None:
    """End the collector's session with the run's exit status, so ``pytest_sessionfinish``
    receives it: pytest derives 0 or 1 from ``session.testsfailed`` (which a replay keeps);
    a failed run without one, or any other status, is raised as pytest's loop raises it."""
    if not exitstatus:
        return
    if exitstatus == pytest.ExitCode.TESTS_FAILED:
        if not session.testsfailed:
            raise session.Failed(session.shouldfail or "the run failed")
        return
    raise pytest.exit.Exception(
        session.shouldstop or f"the run ended with exit status {exitstatus}", returncode=exitstatus
    )


def _warning_data(warning_message) -> dict:
    """A ``warnings.WarningMessage`` as JSON, as xdist's ``serialize_warning_message``."""
    message = warning_message.message
    category = warning_message.category
    return {
        "message": str(message),
        "class": [type(message).__module__, type(message).__qualname__]
        if isinstance(message, Warning)
        else None,
        "args": _wire_value(list(message.args)) if isinstance(message, Warning) else None,
        "category": [category.__module__, category.__qualname__] if category else None,
        "filename": warning_message.filename,
        "lineno": warning_message.lineno,
        "line": warning_message.line,
    }


def _warning_from_data(data: dict):
    """The ``warnings.WarningMessage`` of :func:`_warning_data`, as xdist's controller
    rebuilds it: a plain ``Warning`` with the text where the class cannot be remade."""
    import warnings

    def lookup(path):
        import importlib

        module, name = path
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    message = data["message"]
    if data["class"]:
        try:
            message = lookup(data["class"])(*data["args"])
        except Exception:
            message = Warning("{}.{}: {}".format(*data["class"], data["message"]))
    try:
        category = lookup(data["category"]) if data["category"] else None
    except Exception:
        category = Warning
    return warnings.WarningMessage(
        message, category, data["filename"], data["lineno"], line=data["line"]
    )


def _session_exit(exc, last_test: bool) -> dict:
    """A ``pytest.exit()`` for the controller: the line pytest prints for it, its code."""
    import traceback

    message = "".join(traceback.format_exception_only(type(exc), exc)).rstrip()
    returncode = exc.returncode if isinstance(exc.returncode, int) else None
    return {"message": message, "returncode": returncode, "last_test": last_test}


def _junit_timestamp(logxml) -> str:
    """When the session started, ISO 8601 with the local offset, as junitxml writes it
    (pytest 8.4 keeps an Instant, older ones a float)."""
    start = getattr(logxml, "suite_start", None)
    if start is not None:
        return start.as_utc().astimezone().isoformat()
    from datetime import datetime, timezone

    return datetime.fromtimestamp(logxml.suite_start_time, timezone.utc).astimezone().isoformat()


def _interrupt_exit(exc) -> dict:
    """A ``KeyboardInterrupt`` for the controller, with the location pytest prints for it."""
    crash = pytest.ExceptionInfo.from_exception(exc).getrepr(funcargs=True).reprcrash
    location = f"{crash.path}:{crash.lineno}: {crash.message}" if crash else None
    return {"message": "KeyboardInterrupt", "returncode": 2, "last_test": False, "location": location}


def _logxml(config):
    """pytest's junitxml plugin object, when ``--junitxml`` is on."""
    from _pytest.junitxml import xml_key

    return config.stash.get(xml_key, None)


class _JunitDelta:
    """The <testcase> elements and counts pytest's junitxml made for one test."""

    def __init__(self, config) -> None:
        self.logxml = _logxml(config)
        if self.logxml is not None:
            self.stats = dict(self.logxml.stats)
            self.double = self.logxml.cnt_double_fail_tests

    @classmethod
    def collected(cls, config):
        """What junitxml recorded while collecting (collection errors), from zero."""
        delta = cls(config)
        if delta.logxml is not None:
            delta.stats = {}
            delta.double = 0
        return delta.take()

    def take(self):
        if self.logxml is None:
            return None
        import xml.etree.ElementTree as ET

        cases = [
            ET.tostring(_cut_xml(r.to_xml()), encoding="unicode")
            for r in self.logxml.node_reporters_ordered
        ]
        self.logxml.node_reporters_ordered.clear()
        stats = {k: v - self.stats.get(k, 0) for k, v in self.logxml.stats.items()}
        return {
            "testcases": cases,
            "stats": {k: v for k, v in stats.items() if v},
            "double_failures": self.logxml.cnt_double_fail_tests - self.double,
        }


def _cut_xml(element):
    """A <testcase> whose texts (captured output, failure text and messages) are cut to
    MAX_TEXT each, as a report's are."""
    for node in element.iter():
        if node.text:
            node.text = _cut(node.text, MAX_TEXT)
        for name, value in node.attrib.items():
            node.attrib[name] = _cut(value, MAX_TEXT)
    return element


def _warning(config, warning_message, nodeid, location) -> dict:
    """A warning as pytest's warnings summary shows it: rendered text and where it arose."""
    from _pytest.warnings import warning_record_to_str

    if nodeid:
        where = nodeid
    elif location:
        from _pytest.pathlib import bestrelpath

        where = f"{bestrelpath(config.invocation_params.dir, Path(location[0]))}:{location[1]}"
    else:
        where = None
    return {"message": warning_record_to_str(warning_message), "location": where}


def _warning_reports(config, reports) -> list:
    """The terminal reporter's warnings, as the protocol carries them."""
    return [{"message": w.message, "location": w.get_location(config)} for w in reports]


def _plugin_workerinput(config) -> dict:
    """What plugins expect in a worker's ``workerinput``, which xdist's controller lets them
    add in ``pytest_configure_node``: pytest-cov's collector host and top directory (workers
    save their data beside it; the collector combines and reports) and pytest-randomly's seed
    (every worker shuffles and reseeds alike)."""
    extra = {}
    cov = config.pluginmanager.get_plugin("_cov")
    controller = getattr(cov, "cov_controller", None)
    if controller is not None:
        extra.update(
            cov_master_host=socket.gethostname(),
            cov_master_topdir=controller.topdir,
            cov_master_rsync_roots=[],
        )
    if config.pluginmanager.hasplugin("randomly"):
        extra["randomly_seed"] = config.getoption("randomly_seed")
    return extra


def _measure_coverage_as_worker(config) -> None:
    """A forked worker inherits the collector's coverage measurement; restart it the way
    pytest-cov starts an xdist worker's, so the collector alone combines and reports."""
    cov = config.pluginmanager.get_plugin("_cov")
    if getattr(cov, "cov_controller", None) is None or not hasattr(config, "workerinput"):
        return
    from pytest_cov import engine

    cov.cov_controller.cov.stop()
    cov.start(engine.DistWorker, config, config.workerinput["workerid"])


# Signals the keeper must survive: the terminal's (a spawned keeper joins the controller's
# process group) and those the controller sends a worker while the keeper is still in its group.
_KEEPER_IGNORES = {signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGTSTP, signal.SIGQUIT}


def _start_worker_under_keeper(parent: int) -> None:
    """Split this process, a child of ``parent``, in two: the worker, which returns from here to run the tests, and
    its keeper, the worker's parent, which never returns.

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


def _open_private(path: str, flags: int) -> int:
    """Opens (creating it) a file in the run's private directory that only this user may read
    or write; the mode is set explicitly, whatever the umask."""
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    return fd


_stack_file = None
_phase = None
_IDLE, _SETUP, _CALL, _TEARDOWN, _REPORTING = range(5)


class _PhaseFile:
    """The test and phase this worker is in, in a file both sides map (see the protocol's
    ``state_file``): written as tests go, read by the controller only after a crash."""

    def __init__(self, path: str) -> None:
        import mmap

        fd = _open_private(path, os.O_RDWR)
        try:
            os.ftruncate(fd, 16)
            self.map = mmap.mmap(fd, 16)
        finally:
            os.close(fd)
        self.index = 0

    def enter(self, index: int, phase: int) -> None:
        self.index = index
        struct.pack_into("<QB", self.map, 0, index, phase)


def _take_identity(config, worker: dict, workeroutput: dict | None = None) -> None:
    """Give this process its worker identity, as pytest-xdist's workers have it; a forked
    worker's ``workeroutput`` starts as the collector's was at the fork."""
    if not worker.get("distributed"):
        return  # -n 0: look like plain pytest, as xdist does without workers
    wid = worker["workerid"]
    os.environ["PYTEST_XDIST_WORKER"] = wid
    os.environ["PYTEST_XDIST_WORKER_COUNT"] = str(worker["workercount"])
    os.environ["PYTEST_XDIST_TESTRUNUID"] = worker["testrunuid"]
    _xdist_compat_shims()
    config.workerinput = {
        "workerid": wid,
        "workercount": worker["workercount"],
        "testrunuid": worker["testrunuid"],
        "mainargv": worker["mainargv"],
        **worker.get("workerinput", {}),
    }
    config.workeroutput = dict(workeroutput or {})


def _xdist_compat_shims() -> None:
    """Plugins that check for an installed pytest-xdist before behaving as they do in its
    workers: pytest-rerunfailures logs each rerun only when it finds xdist >= 1.20."""
    rerunfailures = sys.modules.get("pytest_rerunfailures")
    if rerunfailures is not None and hasattr(rerunfailures, "works_with_current_xdist"):
        rerunfailures.works_with_current_xdist = lambda: True


def _one_benchmark_warning(config) -> None:
    """pytest-benchmark warns "disabled because xdist plugin is active" from the process that
    noted a benchmark test while collecting: under xdist gw0 alone, under shoal the collector,
    whose note forked workers inherit (and spawned gw0 makes again). The collector's is the
    one printed, so a worker forgets its own."""
    benchmarks = getattr(config, "_benchmarksession", None)
    if benchmarks is not None and hasattr(benchmarks, "xdist_benchmark_found"):
        benchmarks.xdist_benchmark_found = False


def _worker_summaries_only(config, shoal) -> None:
    """Under ``-n 0``, the terminal summaries of plugins that keep their results in the process
    that ran the tests (pytest-benchmark's table) are forwarded from the worker, as the
    finished collector's are. Every other summary (a conftest's, pytest-html's "generated"
    line, pytest-cov's table) is the collecting process's, which the replay fed: printed once."""
    _hand_reporting_over(config)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.stats = {}  # the controller reports tests and warnings itself
    hook = config.hook.pytest_terminal_summary
    for impl in hook.get_hookimpls():
        if impl.plugin not in (shoal, reporter) and _plugin_package(impl.plugin) not in _WORKER_SUMMARIES:
            hook._remove_plugin(impl.plugin)


# Plugins whose terminal summary only the process that ran the tests can print.
_WORKER_SUMMARIES = ("pytest_benchmark",)


def _syrupy_reports_as_a_worker(config, worker: dict) -> None:
    """Under ``-n 0``, syrupy in the worker publishes its report as in an xdist worker.

    syrupy learns which snapshots were used in the process that ran the tests, and judges
    every other one unused (``--snapshot-update`` deletes them) where the session ends. Under
    xdist each worker hands its report to the controller through ``config.workeroutput`` and
    ``pytest_testnodedown``. shoal's ``-n 0`` worker is plain pytest to plugins, so syrupy
    would judge twice: rightly in the worker and, in the collecting process, where no test
    ran, that every snapshot is unused. So this worker publishes instead of judging, and the
    collector (which ends the session) merges it, as under ``-n 2``."""
    syrupy_session = sys.modules.get("syrupy.session")
    if worker.get("distributed") or not hasattr(syrupy_session, "is_xdist_worker"):
        return
    syrupy_session.is_xdist_worker = lambda: True
    if not hasattr(config, "workeroutput"):
        config.workeroutput = {}


def _quiet_worker(config, worker: dict) -> None:
    """Silence the worker's terminal, point its temporary directories below the run's, and
    let the controller ask it for stack dumps."""
    global _stack_file, _phase
    _start_junitxml(config)
    _silence_terminal(config)
    _no_debugger(config)
    if worker.get("state_file"):
        _phase = _PhaseFile(worker["state_file"])
    if worker.get("stack_file"):
        # The controller asks for every thread's stack (SIGUSR1) before ending a test that
        # overran its timeout.
        import faulthandler

        _stack_file = os.fdopen(_open_private(worker["stack_file"], os.O_WRONLY | os.O_TRUNC), "w")
        faulthandler.register(signal.SIGUSR1, file=_stack_file, all_threads=True)
    tmp = getattr(config, "_tmp_path_factory", None)
    if worker.get("distributed") and tmp is not None and worker.get("basetemp"):
        basetemp = Path(worker["basetemp"]) / f"popen-{worker['workerid']}"
        tmp._given_basetemp = basetemp
        tmp._basetemp = None
        config.option.basetemp = str(basetemp)


def _no_debugger(config) -> None:
    """``--pdb`` and ``--trace`` wait for commands from a terminal, which a worker does not
    have: the controller runs those tests again on its own terminal (see _Foreground)."""
    config.option.usepdb = False  # pytest's runner and unittest support read it too
    config.option.trace = False
    for name in ("pdbinvoke", "pdbtrace"):
        plugin = config.pluginmanager.get_plugin(name)
        if plugin is not None:
            config.pluginmanager.unregister(plugin)


class _Foreground:
    """The ``debug`` role: plain pytest on the controller's terminal, where ``--pdb`` and
    ``--trace`` work, restricted to the tests the controller names (the parallel run's
    failures), or every selected test when it names none."""

    def __init__(self, nodeids: list | None) -> None:
        self.nodeids = None if nodeids is None else set(nodeids)

    @pytest.hookimpl(tryfirst=True)  # before junitxml's own pytest_configure
    def pytest_configure(self, config):
        if self.nodeids is not None:
            config.option.xmlpath = None  # the parallel run wrote the run's report

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config, items):
        if self.nodeids is None:
            return
        deselected = [item for item in items if item.nodeid not in self.nodeids]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if item.nodeid in self.nodeids]


def _send_output_to_controller(config, path: str, worker: dict) -> None:
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
    hello = json.dumps({"type": "hello", **_hello("output", worker)}).encode()
    sock.sendall(_HEADER.pack(len(hello)) + hello)
    sys.stdout.flush()
    sys.stderr.flush()
    for fd in (1, 2):
        os.dup2(sock.fileno(), fd)
    sock.close()
    _line_buffered()
    _fatal_errors_to(os.dup(2))
    if capman is not None:
        capman.start_global_capturing()


_fatal_errors_file = None


def _fatal_errors_to(fd: int) -> None:
    """Where Python writes the stack of a fatal error (segfault, abort): a descriptor capture
    never replaces, so the controller receives it and can show it with the crash."""
    global _fatal_errors_file
    import faulthandler

    _fatal_errors_file = os.fdopen(fd, "w")
    faulthandler.enable(file=_fatal_errors_file, all_threads=True)


def _line_buffered() -> None:
    """Output reaches the controller through a pipe or socket; flush it line by line."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)


def _start_junitxml(config) -> None:
    """pytest's junitxml stays off in processes that have ``workerinput`` (xdist's workers);
    shoal's workers need it on, to build each test's <testcase> (see _JunitDelta). A forked
    worker inherits the collector's; a spawned one starts it here."""
    if not config.option.xmlpath or _logxml(config) is not None:
        return
    from _pytest import junitxml

    workerinput = config.__dict__.pop("workerinput", None)
    try:
        junitxml.pytest_configure(config)
    finally:
        if workerinput is not None:
            config.workerinput = workerinput
    logxml = _logxml(config)
    if logxml is not None:
        logxml.pytest_sessionstart()  # its own sessionstart has already been called for


def _silence_terminal(config) -> None:
    """Workers and the finished collector print nothing: the controller owns the terminal.
    pytest's internal errors, which its reporter would print, go to stderr instead."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        from _pytest._io import TerminalWriter

        reporter._tw = TerminalWriter(io.StringIO())
    # pytest's junitxml still builds each <testcase> (see _JunitDelta), but the controller
    # writes the one file for the run.
    logxml = _logxml(config)
    if logxml is not None:
        logxml.logfile = os.devnull
    if not config.pluginmanager.has_plugin(_INTERNAL_ERRORS):
        config.pluginmanager.register(_InternalErrorsToStderr(), _INTERNAL_ERRORS)


_INTERNAL_ERRORS = "shoal-internal-errors"


class _InternalErrorsToStderr:
    """A silenced process's INTERNALERROR lines, on stderr as pytest writes them when no
    reporter takes them: the controller shows a worker's stderr, the collector's is the
    terminal's. Without them a run would end with "crashed" and no reason."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_internalerror(self, excrepr):
        for line in str(excrepr).split("\n"):
            sys.stderr.write(f"INTERNALERROR> {line}\n")
        sys.stderr.flush()
        return True


class _IdentityWatch:
    """Where the suite's own code first asked which worker it runs in while the collector
    imported, configured and collected it, before any worker existed: a fork of the collector
    would hand every worker the collector's answer (see ``_EnvironWatch``, ``_watch_config``)."""

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
        if "site-packages" in filename or filename == __file__:
            return
        shown = os.path.relpath(filename) if filename.startswith(os.getcwd() + os.sep) else filename
        cls.first = f"{shown}:{frame.f_lineno} {what}"


class _EnvironWatch(type(os.environ)):
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
            _IdentityWatch.note(f"reads {key}", sys._getframe(2))


def _watch_config(config) -> None:
    """Makes ``config`` note the suite asking for ``workerinput`` or ``workeroutput``, which
    only xdist's workers have (``hasattr``, ``getattr`` with a default, ``try``): until
    ``_unwatch_config``, missing attributes of those names go through ``__getattr__``."""
    base = type(config)

    def __getattr__(self, name):
        if name in ("workerinput", "workeroutput"):
            _IdentityWatch.note(f"asks for config.{name}", sys._getframe(1))
        message = f"{base.__name__!r} object has no attribute {name!r}"
        raise AttributeError(message, name=name, obj=self)

    watched = {"__getattr__": __getattr__, "_shoal_base": base}
    config.__class__ = type(base.__name__, (base,), watched)


def _unwatch_config(config) -> None:
    config.__class__ = getattr(type(config), "_shoal_base", type(config))


def _fork_unsafe_reason() -> str | None:
    if os.environ.get("SHOAL_START") == "spawn":
        return "--start spawn was given"
    if not hasattr(os, "fork") or sys.platform not in ("linux", "darwin"):
        return f"fork is not available on {sys.platform}"
    if threading.active_count() > 1:
        names = ", ".join(t.name for t in threading.enumerate() if t is not threading.current_thread())
        return f"threads are alive in the collecting process ({names})"
    return _fork_hostile_reason()


def _socket_fds() -> set:
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


_sockets_at_start: set = set()  # shoal's channel and whatever the controller's parent left open
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
# pool's threads, and a ProcessPoolExecutor's, are caught as live threads.
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
    ("socket", "socket", lambda sock: sock.fileno() not in dict(_sockets_at_start), True),
)


def _fork_hostile_reason() -> str | None:
    """Names the first object made while collecting that forked workers must not share (see
    ``_FORK_HOSTILE``), else a socket opened since start-up, else ``None``."""
    import gc

    new_sockets = _socket_fds() - _sockets_at_start
    kinds = []
    for module, name, live, holds_socket in _FORK_HOSTILE:
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


def _scope_of(nodeid: str) -> str:
    """The loadscope unit: the module, or the class for methods (as pytest-xdist groups them)."""
    parts = nodeid.split("::")
    if len(parts) > 2:
        return "::".join(parts[:-1])
    return parts[0]


class RunOnceSetupError(Exception):
    """A run-once fixture's setup failed on the worker that ran it."""


def _setup_outcome(exc: BaseException) -> dict:
    """How a run-once setup failed, for the other workers: a skip or an xfail with its reason
    (their tests then skip or xfail too), anything else as its traceback (they error)."""
    if isinstance(exc, pytest.skip.Exception):
        return {"kind": "skip", "text": exc.msg or ""}
    if isinstance(exc, pytest.xfail.Exception):
        return {"kind": "xfail", "text": exc.msg or ""}
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"kind": "error", "text": text}


def _setup_failure(name: str, reply: dict) -> BaseException:
    """The exception a worker raises for a run-once setup that failed on another worker."""
    if reply.get("kind") == "skip":
        return pytest.skip.Exception(reply["text"])
    if reply.get("kind") == "xfail":
        return pytest.xfail.Exception(reply["text"])
    return RunOnceSetupError(f"run-once fixture {name!r} failed on another worker:\n{reply['text']}")


def _fail_setup(fixturedef, request, exc: BaseException) -> None:
    """Fails the fixture's setup with ``exc`` through pytest's own setup hook, standing in for
    the fixture function: pytest then caches the failure (in a form that differs between its
    versions) and reports it, so every later use in this worker ends the same way, and a skip
    is shown at the test's location."""
    from _pytest.fixtures import pytest_fixture_setup as set_up

    def raise_it():
        raise exc

    func, argnames = fixturedef.func, fixturedef.argnames
    fixturedef.func, fixturedef.argnames = raise_it, ()
    try:
        set_up(fixturedef, request)
    finally:
        fixturedef.func, fixturedef.argnames = func, argnames


def _run_once_names(config) -> set:
    """Session fixtures to set up once per run: ``shoal_run_once = [...]`` in any conftest
    (plain pytest ignores it, so they stay ordinary session fixtures there) and the ini
    option of the same name."""
    names = set(config.getini("shoal_run_once"))
    for plugin in config.pluginmanager.get_plugins():
        declared = getattr(plugin, "shoal_run_once", ())
        if isinstance(declared, (list, tuple, set)):
            names.update(str(n) for n in declared)
    return names


def _cwd_relative(config, nodeid: str) -> str:
    """The node id as pytest shows it: its path relative to the invocation directory
    (pytest's ``cwd_relative_nodeid``, whose signature changed in pytest 9)."""
    if config.invocation_params.dir == config.rootpath:
        return nodeid
    from _pytest.pathlib import bestrelpath

    path, sep, rest = nodeid.partition("::")
    return bestrelpath(config.invocation_params.dir, config.rootpath / path) + sep + rest


def _mark_value(mark, name: str):
    """A mark's first argument, or its keyword ``name``."""
    if mark is None:
        return None
    return mark.args[0] if mark.args else mark.kwargs.get(name)


def _group_name(item) -> str | None:
    """The item's ``xdist_group``: with several marks, their sorted names joined by ``_``
    (one group, as xdist 3.7+ makes it)."""
    names = {str(_mark_value(mark, "name") or "default") for mark in item.iter_markers("xdist_group")}
    return "_".join(sorted(names)) or None


def _json_problem(value) -> str | None:
    """Why ``value`` cannot be sent as JSON, or None."""
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError) as exc:
        return str(exc) or type(exc).__name__
    return None


_BYTES_KEY = "__shoal_bytes__"


def _wire_value(value):
    """``config.workeroutput`` as JSON: bytes (syrupy's compressed report; execnet carries
    them for xdist) become base64 objects; anything else not JSON is left out (``None``)."""
    import base64

    def encode(obj):
        if isinstance(obj, (bytes, bytearray)):
            return {_BYTES_KEY: base64.b64encode(obj).decode("ascii")}
        raise TypeError(type(obj).__name__)

    try:
        return json.loads(json.dumps(value, default=encode))
    except (TypeError, ValueError):
        return None


def _from_wire(value):
    """The inverse of _wire_value."""
    import base64

    if isinstance(value, dict):
        if set(value) == {_BYTES_KEY}:
            return base64.b64decode(value[_BYTES_KEY])
        return {key: _from_wire(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_from_wire(v) for v in value]
    return value


def _xdist_flags(config) -> None:
    """xdist's flags beyond ``-n``/``--dist``: ``-d`` is ``--dist load``; ``--tx N*popen``
    adds ``N`` workers (``-n`` wins when given); remote gateways, rsync and looponfail are
    refused with one line (exit 4)."""
    option = config.option
    if option.looponfail:
        raise pytest.UsageError("shoal does not support -f/--looponfail (pytest-xdist's looponfail)")
    if option.rsyncdir or option.rsyncignore:
        raise pytest.UsageError("shoal does not support --rsyncdir/--rsyncignore: it runs workers locally")
    popen = 0
    for spec in option.tx:
        count, star, kind = spec.partition("*")
        if not star:
            count, kind = "1", count
        if kind.split("//")[0] != "popen" or not count.isdigit():
            raise pytest.UsageError(f"shoal runs local workers only: --tx {spec} is not N*popen")
        popen += int(count)
    if option.tx and option.numprocesses is None:
        option.numprocesses = str(popen)
    if option.distload and option.dist is None:
        option.dist = "load"


def _auto_num_workers(config) -> int | None:
    """A plugin's answer to ``-n auto`` (xdist's ``pytest_xdist_auto_num_workers``)."""
    count = config.hook.pytest_xdist_auto_num_workers(config=config)
    return count if isinstance(count, int) and count > 0 else None


def _workerinput(identity: dict) -> dict:
    """A worker's ``workerinput`` before plugins' ``pytest_configure_node`` adds to it (a
    forked worker takes its node's as its own)."""
    keys = ("workerid", "workercount", "testrunuid", "mainargv")
    return {**{key: identity[key] for key in keys}, **identity.get("workerinput", {})}


class _Gateway:
    """What plugins read of an xdist node's execnet gateway: its id (``gw0``) and, from
    ``_rinfo()``, the interpreter it runs (pytest-cov names workers by it)."""

    def __init__(self, id: str) -> None:
        self.id = id

    def _rinfo(self):
        import types

        return types.SimpleNamespace(
            executable=sys.executable,
            version_info=sys.version_info,
            platform=sys.platform,
            cwd=os.getcwd(),
        )


class _Node:
    """A worker as the controlling side's xdist hooks see it (xdist's WorkerController):
    ``gateway.id``, ``workerid``, ``config``, ``workerinput``, ``nodemanager.roots`` (rsync
    roots: none) and, once it has finished its session, ``workeroutput`` (a crashed worker's
    node has none, as under xdist)."""

    def __init__(self, config, workerid: str, workerinput=None) -> None:
        import types

        self.config = config
        self.gateway = _Gateway(workerid)
        self.nodemanager = types.SimpleNamespace(roots=[])
        self.workerid = workerid
        self.workerinput = workerinput if workerinput is not None else {"workerid": workerid}
        self.shutting_down = False
        # pytest's reports render "[gw0] linux -- Python 3.x /path/python" from it; the
        # workers run this interpreter.
        self.workerinfo = {
            "version": sys.version,
            "version_info": tuple(sys.version_info),
            "sysplatform": sys.platform,
            "executable": sys.executable,
            "cwd": os.getcwd(),
            "id": workerid,
        }

    def __repr__(self) -> str:
        return f"<WorkerController {self.gateway.id}>"


_XDIST_STAND_IN = "xdist.plugin"


class _XdistStandIn:
    """Registered as ``xdist.plugin``: xdist's hooks work in shoal's processes."""


class _XdistHookSpecs:
    """pytest-xdist's hook specifications: the names and arguments of ``xdist.newhooks``."""

    @pytest.hookspec()
    def pytest_xdist_setupnodes(self, config, specs):
        """Before any worker starts."""

    @pytest.hookspec()
    def pytest_xdist_newgateway(self, gateway):
        """A worker's gateway was made (never called by shoal: no execnet)."""

    @pytest.hookspec()
    def pytest_xdist_rsyncstart(self, source, gateways):
        """Before rsync (never called: shoal has no rsync)."""

    @pytest.hookspec()
    def pytest_xdist_rsyncfinish(self, source, gateways):
        """After rsync (never called: shoal has no rsync)."""

    @pytest.hookspec(firstresult=True)
    def pytest_xdist_getremotemodule(self):
        """The module a remote worker runs (never called by shoal)."""

    @pytest.hookspec()
    def pytest_configure_node(self, node):
        """Before a worker starts: a plugin may add to ``node.workerinput``."""

    @pytest.hookspec()
    def pytest_testnodeready(self, node):
        """A worker is ready for tests."""

    @pytest.hookspec()
    def pytest_testnodedown(self, node, error):
        """A worker finished (``node.workeroutput`` holds its ``config.workeroutput``) or
        crashed (``error`` says how; no ``workeroutput``)."""

    @pytest.hookspec()
    def pytest_xdist_node_collection_finished(self, node, ids):
        """A worker finished collecting."""

    @pytest.hookspec(firstresult=True)
    def pytest_xdist_make_scheduler(self, config, log):
        """A scheduler object (shoal's controller schedules; not called)."""

    @pytest.hookspec(firstresult=True)
    def pytest_xdist_auto_num_workers(self, config):
        """The number of workers ``-n auto`` starts."""

    @pytest.hookspec(firstresult=True)
    def pytest_handlecrashitem(self, crashitem, report, sched):
        """A worker crashed while running ``crashitem``."""


def _hello(role: str, worker: dict | None) -> dict:
    return {
        "protocol": PROTOCOL_VERSION,
        "role": role,
        "worker": worker["workerid"] if worker else None,
        "pid": os.getpid(),
    }


def _pytest_main(args: list[str], plugins: list) -> int:
    """pytest.main, but usage errors name shoal rather than ``pytest.main()``."""
    import inspect

    from _pytest import config

    main = getattr(config, "_main", None)
    if main is not None and "prog" in inspect.signature(main).parameters:
        return main(args=args, plugins=plugins, prog="shoal")
    return pytest.main(args, plugins=plugins)  # older pytest: its usage line says pytest


# pytest-xdist's plugins, where installed: shoal is the controller, and defines their options.
_NO_XDIST = ["-p", "no:xdist", "-p", "no:xdist.looponfail"]


def main(argv: list[str]) -> int:
    """Entry point: ``argv`` is ``[socket, role, identity-json, *pytest-args]`` (for the
    ``debug`` role, identity-json is the node ids to run, or ``null``)."""
    path, role, identity = argv[0], argv[1], json.loads(argv[2])
    if role == "debug":
        plugins = [ShoalPlugin(None, role, None), _Foreground(identity), sys.modules[__name__]]
        return int(_pytest_main([*_NO_XDIST, *argv[3:]], plugins))
    if role == "worker":
        _start_worker_under_keeper(os.getppid())
    if role == "collector":
        os.environ.__class__ = _EnvironWatch
    if role == "worker":
        _line_buffered()
    channel = Channel(path)
    if role == "collector":
        _sockets_at_start.update(_socket_fds())
    channel.send({"type": "hello", **_hello(role, identity)})
    plugin = ShoalPlugin(channel, role, identity)
    try:
        # This module carries the fixtures; the plugin object carries the hooks and state.
        code = _pytest_main([*_NO_XDIST, *argv[3:]], [plugin, sys.modules[__name__]])
    except KeyboardInterrupt:
        code = pytest.ExitCode.INTERRUPTED
    except Exception:
        import traceback

        traceback.print_exc()
        code = pytest.ExitCode.INTERNAL_ERROR
    sys.stdout.flush()
    sys.stderr.flush()
    if plugin.role == "worker" and role == "collector":
        # A forked worker must not run the collector's atexit handlers a second time.
        os._exit(int(code))
    return int(code)
