"""Run-once fixtures: session fixtures named in ``shoal_run_once`` are set up by the first
worker that needs one; the others wait for its JSON value, and its owner tears it down after
every other worker is done (the controller arbitrates, see ``docs/protocol.md``)."""

from __future__ import annotations

import pytest

from .wire import json_problem


class RunOnceSetupError(Exception):
    """A run-once fixture's setup failed on the worker that ran it."""


def names(config) -> set:
    """Session fixtures to set up once per run: ``shoal_run_once = [...]`` in any conftest
    (plain pytest ignores it, so they stay ordinary session fixtures there) and the ini
    option of the same name."""
    found = set(config.getini("shoal_run_once"))
    for plugin in config.pluginmanager.get_plugins():
        declared = getattr(plugin, "shoal_run_once", ())
        if isinstance(declared, (list, tuple, set)):
            found.update(str(n) for n in declared)
    return found


def set_up(channel, fixturedef, request):
    """A run-once session fixture's value, set up here or received from the worker that set
    it up; None for any other fixture (pytest sets it up)."""
    if fixturedef.scope != "session":
        return None
    name = fixturedef.argname
    if name not in names(request.config):
        return None
    channel.send({"type": "fixture_request", "name": name})
    reply = channel.recv_reply("fixture_run", "fixture_value", "fixture_error")
    if reply["type"] == "fixture_value":
        fixturedef.cached_result = (reply["value"], fixturedef.cache_key(request), None)
        return reply["value"]
    if reply["type"] == "fixture_error":
        _fail_setup(fixturedef, request, _setup_failure(name, reply))
    from _pytest.fixtures import pytest_fixture_setup as pytest_set_up

    try:
        value = pytest_set_up(fixturedef, request)
    except BaseException as exc:
        channel.send({"type": "fixture_failed", "name": name, **_setup_outcome(exc)})
        raise
    problem = json_problem(value)
    if problem is not None:
        error = RunOnceSetupError(
            f"run-once fixture {name!r} returned a value of type {type(value).__name__!r}, "
            f"which shoal cannot pass to other workers: it must be JSON-serializable ({problem})"
        )
        channel.send({"type": "fixture_failed", "name": name, **_setup_outcome(error)})
        _fail_setup(fixturedef, request, error)
    channel.send({"type": "fixture_ready", "name": name, "value": value})
    fixturedef.addfinalizer(lambda: _await_release(channel, name))
    return value


def _await_release(channel, name: str) -> None:
    """Finalizers run last-in first-out: this one holds the fixture's own teardown back
    until the controller says no other worker can still be using it."""
    channel.send({"type": "fixture_done", "name": name})
    channel.recv_reply("fixture_release")


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
    from _pytest.fixtures import pytest_fixture_setup as pytest_set_up

    def raise_it():
        raise exc

    func, argnames = fixturedef.func, fixturedef.argnames
    fixturedef.func, fixturedef.argnames = raise_it, ()
    try:
        pytest_set_up(fixturedef, request)
    finally:
        fixturedef.func, fixturedef.argnames = func, argnames
