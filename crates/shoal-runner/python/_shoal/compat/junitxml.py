"""pytest's own junitxml plugin (written against pytest 8.0 to 9.2; private API, see the list in
``_shoal/__init__.py``).

The controller writes the run's one JUnit file, from the <testcase> elements pytest's junitxml
made for each test in the worker that ran it. pytest keeps junitxml off in processes that have
``workerinput`` (xdist's workers), so shoal starts it there, sends each test's elements and
counts as it goes, and points junitxml's own file at ``/dev/null``. The collector's junitxml
must neither see replayed reports nor write its file at the end.
"""

from __future__ import annotations

import functools
import os

import pytest
from _pytest.junitxml import xml_key

from ..report import MAX_TEXT, cut


def logxml(config):
    """pytest's junitxml plugin object, when ``--junitxml`` is on."""
    return config.stash.get(xml_key, None)


def settings(config) -> dict | None:
    """The collector's junitxml settings, for the controller that writes the file."""
    xml = logxml(config)
    if xml is None:
        return None
    return {
        "path": xml.logfile,
        "suite_name": xml.suite_name,
        "timestamp": _timestamp(xml),
        "prefix": xml.prefix,
        "suites_name": "pytest tests" if pytest.version_tuple >= (8, 4) else None,
    }


def _timestamp(xml) -> str:
    """When the session started, ISO 8601 with the local offset, as junitxml writes it
    (pytest 8.4 keeps an Instant, older ones a float)."""
    start = getattr(xml, "suite_start", None)
    if start is not None:
        return start.as_utc().astimezone().isoformat()
    from datetime import datetime, timezone

    return datetime.fromtimestamp(xml.suite_start_time, timezone.utc).astimezone().isoformat()


def start_in_worker(config) -> None:
    """pytest's junitxml stays off in processes that have ``workerinput`` (xdist's workers);
    shoal's workers need it on, to build each test's <testcase> (see Delta). A forked worker
    inherits the collector's; a spawned one starts it here."""
    if not config.option.xmlpath or logxml(config) is not None:
        return
    from _pytest import junitxml

    workerinput = config.__dict__.pop("workerinput", None)
    try:
        junitxml.pytest_configure(config)
    finally:
        if workerinput is not None:
            config.workerinput = workerinput
    xml = logxml(config)
    if xml is not None:
        xml.pytest_sessionstart()  # its own sessionstart has already been called for


def write_nothing(config) -> None:
    """junitxml still builds each <testcase>, but the controller writes the one file."""
    xml = logxml(config)
    if xml is not None:
        xml.logfile = os.devnull


def unregister(config) -> None:
    """The controller writes the run's file and names it; the collector's is nothing."""
    xml = logxml(config)
    if xml is not None:
        del config.stash[xml_key]
        config.pluginmanager.unregister(xml)


@functools.lru_cache(maxsize=1)
def logreport_without(config):
    """``pytest_runtest_logreport`` for replayed reports, without pytest's junitxml: the
    controller writes the run's file (the collector's is unregistered once the run is over)."""
    xml = logxml(config)
    if xml is None:
        return config.hook.pytest_runtest_logreport
    return config.pluginmanager.subset_hook_caller("pytest_runtest_logreport", [xml])


class Delta:
    """The <testcase> elements and counts pytest's junitxml made for one test."""

    def __init__(self, config) -> None:
        self.logxml = logxml(config)
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
            node.text = cut(node.text, MAX_TEXT)
        for name, value in node.attrib.items():
            node.attrib[name] = cut(value, MAX_TEXT)
    return element
