"""What the controller is told of a test: each phase report's status words, timing and text
as pytest's terminal would render them, warnings as its summary shows them, and how a
``pytest.exit()`` or a ``KeyboardInterrupt`` ended the session."""

from __future__ import annotations

import functools
import io
import sys
from pathlib import Path

import pytest

from .compat import sugar
from .plugins import builtin

# What a report carries at most, in bytes of UTF-8: each captured output or log section, and
# each rendered report, crash message or JUnit text. Longer ones keep their beginning and
# their end (see cut), so a test's report stays far below the channel's MAX_FRAME_LEN whatever
# it prints.
MAX_SECTION = 1 << 20
MAX_TEXT = 4 << 20

# pytest 9 shows a failure given as plain text (a strict xpass) with that text in the short
# summary; older ones show no message for it.
_TEXT_IS_MESSAGE = pytest.version_tuple >= (9,)


def cut(text: str, limit: int) -> str:
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
    out = _pytest_terminalwriter(config, terminal_writer(config))
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


def has_terminal(config) -> bool:
    return config.pluginmanager.get_plugin("terminalreporter") is not None


def terminal_writer(config):
    """pytest's terminal writer, or a default one."""
    if has_terminal(config):
        return config.get_terminal_writer()
    from _pytest._io import TerminalWriter

    return TerminalWriter()


def reportopt(config) -> str:
    """``-r``'s characters as pytest's terminal reads them (``wfE`` by default)."""
    if not has_terminal(config):
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
    return "P" in reportopt(config)


_USUAL = ("setup", "call", "teardown")


def test_reports(config, reports) -> list:
    """A test's phase reports for ``test_done``. Where they are pytest's usual setup, call and
    teardown and pytest alone says what a status is, a phase that passed with nothing to show
    is its duration alone: the controller knows the rest (the protocol's
    ``PhaseReport::plain_pass``), and most phases of most runs are such."""
    compact = (
        len(reports) == 3
        and all(r.when == when for r, when in zip(reports, _USUAL))
        and _builtin_statuses(config)
    )
    return [r.duration if compact and _plain_pass(r) else phase_report(config, r, reports) for r in reports]


def _plain_pass(rep) -> bool:
    return rep.outcome == "passed" and not rep.sections and not hasattr(rep, "wasxfail")


@functools.lru_cache(maxsize=1)
def _builtin_statuses(config) -> bool:
    """Whether every ``pytest_report_teststatus`` that shoal asks is pytest's own."""
    return all(builtin(impl.plugin) for impl in sugar.teststatus_hook(config).get_hookimpls())


def phase_report(config, rep, reports) -> dict:
    """What the controller needs of one phase report: status words, timing, rendered text."""
    status = sugar.teststatus_hook(config)(report=rep, config=config)
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
        msg["text"] = cut(_render(config, rep, reports), MAX_TEXT)  # for -rP's PASSES section
    elif rep.failed or (cat in ("failed", "error")):
        msg["text"] = cut(_render(config, rep, reports), MAX_TEXT)
        try:
            longrepr = rep.longrepr
            text_is_message = isinstance(longrepr, str) and _TEXT_IS_MESSAGE
            message = longrepr if text_is_message else longrepr.reprcrash.message
            msg["message"] = cut(message, MAX_TEXT)
        except AttributeError:
            pass
    elif rep.skipped and isinstance(rep.longrepr, tuple):
        from _pytest.pathlib import bestrelpath

        path, lineno, reason = rep.longrepr
        if rep.when == "setup" and "skip" in rep.keywords and "pytestmark" not in rep.keywords:
            lineno = None  # pytest folds such skips per file, see _folded_skips
        msg["skip"] = [bestrelpath(config.invocation_params.dir, Path(path)), lineno, reason]
    return msg


def warning_entry(config, warning_message, nodeid, location) -> dict:
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


def warning_reports(config, reports) -> list:
    """The terminal reporter's warnings, as the protocol carries them."""
    return [{"message": w.message, "location": w.get_location(config)} for w in reports]


def session_exit(exc, last_test: bool) -> dict:
    """A ``pytest.exit()`` for the controller: the line pytest prints for it, its code."""
    import traceback

    message = "".join(traceback.format_exception_only(type(exc), exc)).rstrip()
    returncode = exc.returncode if isinstance(exc.returncode, int) else None
    return {"message": message, "returncode": returncode, "last_test": last_test}


def interrupt_exit(exc) -> dict:
    """A ``KeyboardInterrupt`` for the controller, with the location pytest prints for it."""
    crash = pytest.ExceptionInfo.from_exception(exc).getrepr(funcargs=True).reprcrash
    location = f"{crash.path}:{crash.lineno}: {crash.message}" if crash else None
    return {"message": "KeyboardInterrupt", "returncode": 2, "last_test": False, "location": location}
