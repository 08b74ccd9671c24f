"""shoal's side inside Python: the pytest plugins that the shoal binary carries and hands over.

One process (the *collector*) configures pytest and collects the suite once, sends the
collection to the controller, then forks the workers on request; each worker runs the items
the controller sends it through pytest's own ``pytest_runtest_protocol``. Where forking is not
possible the controller spawns workers that collect for themselves.

Each process registers the plugin of its role, so no hook asks which role it plays:

  main           the entry point: which plugins a process registers
  options        shoal's and xdist's options and markers (every process)
  collector      the collector: collection, forking workers, replaying their reports
  worker         a worker: the test loop, its reports, its end (forked or spawned)
  run_once       run-once session fixtures, set up by one worker for all
  leaks          ``--detect-leaks``: the state each test left behind (a worker's, when on)
  debug          ``--pdb`` / ``--trace``: plain pytest on the controller's terminal
  channel        the framed socket to the controller
  report         what a phase report, a warning and a test's end tell the controller
  wire           values that JSON does not carry as they are (bytes, warnings)
  terminal       the controller owns the terminal: silencing pytest's reporting here
  forking        whether forking is safe, and what the suite asked before the fork
  keeper         the process between the collector and a worker, that reaps its orphans
  xdist_compat   what pytest-xdist gives plugins: hookspecs, fixtures, nodes, workerinput
  compat/        one module per third-party plugin shim, each naming the version it targets

Everything crosses one framed socket per process; the format is documented in
``docs/protocol.md`` and must change together with ``crates/shoal-protocol``.

The binary writes this package into the run's private directory; its bootstrap
(``crates/shoal-runner/src/python.rs``) checks every file is the user's alone and imports
the package from the sources it read, not from ``sys.path``.
"""

import os

#: Where the package's files are: code in here is shoal's, never the suite's.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

# Private pytest and pluggy APIs shoal relies on: check each against a new pytest
# (requirements-oldest.txt pins the oldest supported one, requirements-test.txt the newest).
#   _pytest._io.TerminalWriter and its ``_file``     rendering reports as pytest's terminal would
#                                                    (report, terminal)
#   _pytest.terminal: getreportopt, pytest_report_teststatus, running_on_ci
#                                                    the -r characters, default status letters,
#                                                    CI-aware summary truncation (report, collector)
#   TerminalReporter._tw                             silencing a worker's terminal (terminal)
#   _pytest.pathlib.bestrelpath                      node id display relative to the invocation
#                                                    (report, collector)
#   _pytest.fixtures.pytest_fixture_setup            a run-once fixture's own setup (run_once)
#   _pytest.junitxml.xml_key (config.stash), LogXML's logfile, stats, node_reporters_ordered,
#   cnt_double_fail_tests, suite_start(_time), pytest_configure
#                                                    the collector's LogXML, unregistered; each
#                                                    test's <testcase> (compat.junitxml)
#   _pytest.reports.TestReport                       the report for a test its worker's crash
#                                                    ended (collector)
#   _pytest.warnings.warning_record_to_str           warnings as pytest's summary prints them
#                                                    (report)
#   _pytest.config._main (its ``prog``)              usage errors that name shoal (main)
#   Cache._cachedir                                  the cache directory the controller writes
#                                                    (collector)
#   Config._tmp_path_factory, TempPathFactory._given_basetemp / _basetemp
#                                                    each worker's own --basetemp (worker)
#   OptionGroup._addoption                           xdist's short options (-n, -d, -f) (options)
#   pluggy HookCaller._remove_plugin                 taking reporters off a forked worker's hooks,
#                                                    Hypothesis's summary off a worker's
#                                                    (collector, terminal, compat.hypothesis)
#   os.environ._data (CPython's)                     the environment copied in C, per test
#                                                    (leaks; without it, decoded)
