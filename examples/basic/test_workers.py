"""What a test sees of the run it is part of, and a few slow tests."""

import os
import time

import pytest


def test_worker_id_matches_the_environment(worker_id):
    if worker_id == "master":
        assert "PYTEST_XDIST_WORKER" not in os.environ
    else:
        assert os.environ["PYTEST_XDIST_WORKER"] == worker_id
        assert worker_id.startswith("gw")


def test_worker_count_is_known(worker_id):
    if worker_id != "master":
        assert int(os.environ["PYTEST_XDIST_WORKER_COUNT"]) >= 1


def test_testrun_uid_is_shared(testrun_uid):
    assert len(testrun_uid) == 32
    env = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    assert env is None or env == testrun_uid


def test_workerinput(request, worker_id):
    workerinput = getattr(request.config, "workerinput", None)
    if worker_id == "master":
        assert workerinput is None
    else:
        assert workerinput["workerid"] == worker_id


def test_tmp_path_is_private(tmp_path, worker_id):
    (tmp_path / "note.txt").write_text(worker_id)
    assert (tmp_path / "note.txt").read_text() == worker_id
    if worker_id != "master":
        assert f"popen-{worker_id}" in tmp_path.parts


@pytest.mark.xdist_group(name="ledger")
def test_ledger_opens():
    assert True


@pytest.mark.xdist_group(name="ledger")
def test_ledger_closes():
    assert True


@pytest.mark.slow
@pytest.mark.parametrize("step", range(6))
def test_slow_step(step):
    time.sleep(0.1)
    assert step < 6
