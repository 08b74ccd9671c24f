"""Fixtures shared by the example suite.

They use the pytest-xdist contract that shoal honours: the ``worker_id`` fixture ("gw0",
"gw1", ... or "master" when the run is not distributed) and a per-worker base temporary
directory (``<basetemp>/popen-gwN``) whose parent every worker shares.
"""

import json
import os

import pytest
from filelock import FileLock


def _build_catalog():
    """Something expensive that the whole run should build only once."""
    return {
        "colours": ["red", "green", "blue"],
        "sizes": {"S": 1, "M": 2, "L": 3},
        "built_by_pid": os.getpid(),
    }


@pytest.fixture(scope="session")
def catalog(tmp_path_factory, worker_id):
    """Built once for the whole run, even across workers (pytest-xdist's documented recipe)."""
    if worker_id == "master":
        # Not distributed: plain pytest or `shoal -n 0`.
        return _build_catalog()
    # Every worker's basetemp is <basetemp>/popen-gwN: the parent is shared by all of them.
    shared = tmp_path_factory.getbasetemp().parent / "catalog.json"
    with FileLock(str(shared) + ".lock"):
        if shared.is_file():
            return json.loads(shared.read_text())
        data = _build_catalog()
        shared.write_text(json.dumps(data))
        return data


@pytest.fixture(scope="session")
def worker_label(worker_id):
    """A per-worker name, as a test might use to pick its own database or port range."""
    return f"example-{worker_id}"
