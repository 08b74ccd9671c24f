"""A pytest plugin for bench/pertest.py (loaded with ``-p loop_probe``, this directory on
PYTHONPATH): the CPU a process spends running its tests, and how much of it inside pytest's
``pytest_runtest_protocol``.

The test loop is measured from the start of the process's first test to the end of its last
(thread CPU time): in serial pytest that is pytest's own loop, in a shoal worker the worker's
loop, whose time outside the protocol is shoal's per-test work (taking the next test, sending
the reports). Start-up, collection, the fork and the session's end are outside it. At
unconfigure each process that ran tests appends one JSON line to $LOOP_PROBE_OUT:
``{"worker": "gw0" or null, "tests", "loop_cpu", "protocol_cpu"}``.
"""

import json
import os
import time

import pytest

_loop = {"tests": 0, "protocol": 0.0, "first": None, "last": None}


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    start = time.thread_time()
    if _loop["first"] is None:
        _loop["first"] = start
    yield
    end = time.thread_time()
    _loop["protocol"] += end - start
    _loop["tests"] += 1
    _loop["last"] = end


# Not pytest_sessionfinish: that is one of the hooks by which a plugin reads a run's reports in
# the controlling process, and a plugin implementing it makes shoal's workers send every report
# for the collector to replay, which would add that cost to what is measured.
def pytest_unconfigure(config):
    out = os.environ.get("LOOP_PROBE_OUT")
    if not out or not _loop["tests"]:
        return
    workerinput = getattr(config, "workerinput", None)
    line = {
        "worker": workerinput["workerid"] if workerinput else None,
        "tests": _loop["tests"],
        "loop_cpu": _loop["last"] - _loop["first"],
        "protocol_cpu": _loop["protocol"],
    }
    with open(out, "a") as f:
        f.write(json.dumps(line) + "\n")
