"""The collector: the plugin of the process that configures pytest and collects the suite
once, sends the collection to the controller, forks the workers it asks for, and replays
their reports into its own hooks, so that plugins reading a run's results in the controlling
process (pytest-html, junit-like reporters, a conftest's ``pytest_terminal_summary``) see
them as under pytest-xdist's controller."""

from __future__ import annotations

import os
import platform
import select
import signal
import sys

import pytest

from . import forking, terminal, xdist_compat
from .channel import Channel, hello
from .compat import cov, hypothesis, junitxml, randomly, rerunfailures, syrupy
from .keeper import start_worker_under_keeper
from .plugins import builtin
from .report import has_terminal, phase_report, reportopt, terminal_writer, warning_reports
from .wire import from_wire, warning_from_data
from .worker import WorkerPlugin, send_output_to_controller


def distributed(config) -> bool:
    """Whether this run has xdist workers (not ``-n 0``)."""
    numprocesses = os.environ.get("SHOAL_NUMPROCESSES") or config.option.numprocesses
    return str(numprocesses or "auto").strip() != "0"


class CollectorPlugin:
    """The state of the collector; registered with pytest as a plugin. ``options`` is the
    process's :class:`options.Options`; ``sockets_at_start`` the sockets open before the
    suite was imported (see ``forking.fork_unsafe_reason``)."""

    def __init__(self, channel: Channel, options, sockets_at_start: set) -> None:
        self.channel = channel
        self.options = options
        self.sockets_at_start = sockets_at_start
        self._forward_summary = False
        self._replay_wanted = False  # the collector's plugins read reports
        self._nodes: dict = {}  # stand-ins for xdist's worker nodes
        self._exitstatus = None  # the run's, from the controller's stop
        self._known_warnings = 0  # in the finished collector's stats, already reported
        self._configured_output: dict = {}  # workeroutput as collection left it, for forks

    @pytest.hookimpl(tryfirst=True)
    def pytest_cmdline_main(self, config):
        """Before any plugin configures: what the suite puts in config.workeroutput before
        the fork (pytest-metadata's metadata, while configuring) is what each xdist worker's
        own configure and collection put there: forked workers start with it (see
        _serve_forks)."""
        forking.watch_config(config)
        config.workeroutput = {}
        randomly.take_shuffle_seed(config)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        config = session.config
        collection_failed = session.testsfailed and not config.option.continue_on_collection_errors
        if collection_failed or config.option.collectonly or not session.items:
            return None  # pytest's own loop reports it; the controller reads the exit code
        self._send_collection(session)
        forking.unwatch_environ()  # collection is over
        forking.unwatch_config(config)
        self._configured_output = config.__dict__.pop("workeroutput", {})
        worker = self._serve_forks(session)
        if worker is None:
            _end_as(session, self._exitstatus)
            return True  # the parent: the run is over
        worker.run_tests(session)  # a forked worker
        return True

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter):
        """In the finished collector, what other plugins add to the terminal summary (a
        coverage table, say) goes to the controller, which prints it where pytest would."""
        if not self._forward_summary:
            return (yield)
        summary = terminal.forward_summary(self.channel, terminalreporter, self._known_warnings)
        return (yield from summary)

    def _send_collection(self, session):
        config = session.config
        from _pytest.terminal import running_on_ci

        tw = terminal_writer(config)
        verbose = config.getoption("verbose", 0)
        unsafe = forking.fork_unsafe_reason(self.sockets_at_start)
        own_flaky = not rerunfailures.present(config)  # else the flaky mark is its
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
            if own_flaky:
                reruns = _mark_value(item.get_closest_marker("flaky"), "reruns")
                if reruns is not None:
                    entry["reruns"] = int(reruns)
            items.append(entry)
        tmp = getattr(config, "_tmp_path_factory", None)
        cache = getattr(config, "cache", None)
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        stats = reporter.stats if reporter is not None else {}
        sys.stdout.flush()
        replay = replay_scope(config)
        self._replay_wanted = replay is not None
        self.channel.send(
            {
                "type": "collected",
                "replay": replay,
                "items": items,
                "fork_unsafe": unsafe,
                "identity_read": forking.IdentityWatch.first,
                "basetemp": str(tmp.getbasetemp()) if tmp else None,
                "settings": {
                    "numprocesses": config.option.numprocesses,
                    "dist": self.options.dist_given,
                    "maxprocesses": config.option.maxprocesses,
                    "verbose": verbose,
                    "reportchars": reportopt(config),
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
                    "junit": junitxml.settings(config),
                    "usepdb": bool(getattr(config.option, "usepdb", False)),
                    "trace": bool(getattr(config.option, "trace", False)),
                    "instafail": bool(getattr(config.option, "instafail", False)),
                    "terminal": has_terminal(config),
                    "auto_num_workers": xdist_compat.auto_num_workers(config),
                    "loadscope_reorder": config.option.loadscopereorder,
                    "testrunuid": config.option.testrunuid,
                    "randomly_seed": randomly.seed(config),
                    "python_version": platform.python_version(),
                    "pytest_version": pytest.__version__,
                },
                "warnings": warning_reports(config, stats.get("warnings", [])),
                # What plugins expect in a worker's workerinput, which xdist's controller lets
                # them add in pytest_configure_node.
                "workerinput": {**cov.workerinput(config), **randomly.workerinput(config)},
                # Collection errors (--continue-on-collection-errors): one report each.
                "collect_errors": [
                    {
                        "nodeid": r.nodeid,
                        "headline": r.head_line or r.nodeid,
                        "report": phase_report(config, r, [r]),
                    }
                    for r in stats.get("error", [])
                    if getattr(r, "when", None) == "collect"
                ],
                "junit": junitxml.Delta.collected(config),
            }
        )

    def _serve_forks(self, session) -> WorkerPlugin | None:
        """Fork workers as the controller asks; None in the collector once it is told to stop,
        a forked worker's plugin in that worker.

        The collector is the parent of every forked worker's keeper (which exits as its worker
        did, see keeper.start_worker_under_keeper), so it also reaps them and tells the
        controller how each one ended (the controller cannot wait on processes it did not
        start). It waits for those pids alone: children the suite started here (a conftest's
        subprocess) are the suite's to wait for, and orphans go to the keepers, not here.
        SIGCHLD wakes the loop through a pipe, so it never polls.
        """
        config = session.config
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        old_handler = signal.signal(signal.SIGCHLD, lambda *_: None)
        children: dict[int, str] = {}
        collector = os.getpid()
        stopping = False
        # Work of the run's end that can be done ahead, once, the first time nothing came for a
        # moment: the workers are running tests, and the collector would only wait.
        ahead = hypothesis.summary_imports(config)
        # Without workers (-n 0) the run is plain pytest to plugins: no xdist node hooks.
        nodes = distributed(config)
        if nodes:
            config.hook.pytest_xdist_setupnodes(config=config, specs=[])
        if self._replay_wanted:
            terminal.hand_reporting_over(config)  # replayed reports must not print here
        while not stopping or children:
            if stopping:
                select.select([wake_r], [], [])
                message_waiting = False
            elif self.channel.frame_ready():
                message_waiting = True
            else:
                timeout = _IDLE if ahead else None
                readable = select.select([self.channel.sock, wake_r], [], [], timeout)[0]
                message_waiting = self.channel.sock in readable
                if ahead and not readable:
                    ahead()
                    ahead = None
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
                self._node_down(config, msg)
            elif msg["type"] == "fork":
                identity = msg["identity"]
                workerinput = xdist_compat.workerinput(identity)
                node = xdist_compat.Node(config, identity["workerid"], workerinput=workerinput)
                if nodes:
                    config.hook.pytest_configure_node(node=node)
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
                    start_worker_under_keeper(collector)
                    return self._become_worker(config, {**identity, "workerinput": node.workerinput})
                children[pid] = identity["workerid"]
                self.channel.send({"type": "forked", "worker": identity["workerid"], "pid": pid})
                if nodes:
                    config.hook.pytest_testnodeready(node=node)
        signal.set_wakeup_fd(old_wakeup)
        signal.signal(signal.SIGCHLD, old_handler)
        os.close(wake_r)
        os.close(wake_w)
        junitxml.unregister(config)
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        hypothesis.no_empty_summary_in_collector(config, reporter.stats if reporter else {})
        if self._replay_wanted:
            # Plugins' summaries read the replayed stats; the controller already has the
            # warnings in them.
            self._known_warnings = len(reporter.stats.get("warnings", [])) if reporter else 0
        else:
            terminal.hand_reporting_over(config)
            if reporter is not None:
                reporter.stats = {}  # the controller reports tests and warnings itself
        self._forward_summary = True
        return None

    def _become_worker(self, config, identity: dict) -> WorkerPlugin:
        """In a forked child (under its keeper): this process stops being the collector and
        becomes the worker ``identity`` names, with a channel of its own and the worker's
        plugin registered in place of this one."""
        path = self.channel.path
        send_output_to_controller(config, path, identity)
        xdist_compat.take_identity(config, identity, self._configured_output)
        randomly.seed_from_identity(config, identity)
        worker = WorkerPlugin(Channel(path), identity)
        config.pluginmanager.unregister(self)
        config.pluginmanager.register(worker)
        # Registering replays pytest_warning_recorded's historic calls: the collection's
        # warnings, which went with the collection.
        worker.take_warnings()
        if self._replay_wanted:
            _drop_reporters(config)
        worker.prepare(config)
        cov.measure_as_worker(config)
        worker.channel.send(hello("worker", identity))
        worker.channel.send({"type": "ready", "collection": None})
        return worker

    def _node(self, config, workerid: str) -> xdist_compat.Node:
        """The collector's one stand-in for a worker's xdist node (a spawned worker's is made
        when its first message about it arrives)."""
        node = self._nodes.get(workerid)
        if node is None:
            node = self._nodes[workerid] = xdist_compat.Node(config, workerid)
        return node

    def _node_down(self, config, msg: dict) -> None:
        """A worker finished its session (or died): ``pytest_testnodedown`` on the controlling
        side, with what the worker put in ``config.workeroutput``, as xdist calls it."""
        node = self._node(config, msg["worker"])
        if msg.get("workeroutput") is not None:
            node.workeroutput = from_wire(msg["workeroutput"])  # a crashed worker's has none
        node.shutting_down = True
        syrupy.testnodedown_hook(config, distributed(config))(node=node, error=msg.get("error"))

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
                junitxml.logreport_without(config)(report=report)
            elif kind == "crash":
                # As xdist's controller reports a test its worker's crash ended: a failure
                # at "???" (pytest_handlecrashitem is not called: it wants xdist's scheduler).
                from _pytest.reports import TestReport

                nodeid = event["nodeid"]
                path = nodeid.split("::")[0]
                report = TestReport(nodeid, (path, None, path), {}, "failed", event["message"], "???")
                report.node = node
                junitxml.logreport_without(config)(report=report)
            elif kind == "warning":
                location = event["location"]
                hook.pytest_warning_recorded.call_historic(
                    kwargs={
                        "warning_message": warning_from_data(event["warning"]),
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


# How long the collector waits for a message before it does the work it can do ahead (seconds).
_IDLE = 0.05

# The hooks through which plugins read a run's results in the controlling process.
_REPORT_HOOKS = (
    "pytest_runtest_logstart",
    "pytest_runtest_logreport",
    "pytest_runtest_logfinish",
    "pytest_warning_recorded",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
)


def replay_scope(config) -> str | None:
    """Which reports workers send for the collector to replay (the protocol's
    ``ReplayScope``): ``"all"`` when a plugin or conftest, not pytest's own nor shoal's,
    implements a hook that reads reports; ``"marked"`` when every such reader reads only
    reports it marked itself (Hypothesis's summary); None when there is no reader."""
    readers = [
        impl
        for name in _REPORT_HOOKS
        for impl in getattr(config.hook, name).get_hookimpls()
        if not builtin(impl.plugin)
    ]
    if not readers:
        return None
    return "marked" if all(hypothesis.reads_marked_only(impl) for impl in readers) else "all"


def _drop_reporters(config) -> None:
    """A forked worker inherits the reporters plugins made in the collector's
    ``pytest_configure`` for the controlling process (pytest-html's, pytest-reportlog's,
    pytest-json-report's objects), which xdist's workers never have: they would write the
    run's report files a second time, with this worker's tests only. The collector's replay
    feeds them instead, so here they stop receiving reports; they stay registered, for their
    own ``pytest_unconfigure``. Modules and conftests keep their hooks: they serve workers too."""
    reporters = [
        impl.plugin
        for impl in config.hook.pytest_runtest_logreport.get_hookimpls()
        if not isinstance(impl.plugin, type(sys)) and not builtin(impl.plugin)
    ]
    for name in (*_REPORT_HOOKS, "pytest_collectreport"):
        hook = getattr(config.hook, name)
        for plugin in {impl.plugin for impl in hook.get_hookimpls()}.intersection(reporters):
            hook._remove_plugin(plugin)  # what unregistering does, for these hooks alone


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


def _scope_of(nodeid: str) -> str:
    """The loadscope unit: the module, or the class for methods (as pytest-xdist groups them)."""
    parts = nodeid.split("::")
    if len(parts) > 2:
        return "::".join(parts[:-1])
    return parts[0]


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
