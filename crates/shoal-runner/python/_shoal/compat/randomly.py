"""pytest-randomly (written against 5.1, as in requirements-plugins.txt).

Under xdist, pytest-randomly's controller puts its seed in each worker's ``workerinput``
(``randomly_seed``), and a worker shuffles its collection and reseeds ``random`` with it, so
every worker orders the tests as the controller did. shoal's collector does the same. A
spawned ``-n 0`` worker has no ``workerinput`` (it must look like plain pytest), so there the
seed is set as ``--randomly-seed`` would set it. A forked worker configured in the collector,
with the collector's seed; it takes its identity's instead, which differs only in a replay of a
recorded run (``shoal replay``, ``shoal bisect``), whose seed the record gives.
"""

from __future__ import annotations


def workerinput(config) -> dict:
    """What pytest-randomly's controller side puts in a worker's ``workerinput``."""
    if not config.pluginmanager.hasplugin("randomly"):
        return {}
    return {"randomly_seed": config.getoption("randomly_seed")}


def seed_like_the_collector(config, identity: dict) -> None:
    """-n 0, spawned: pytest-randomly reads the seed from workerinput only in xdist's workers;
    this one must shuffle as the collector did."""
    seed = identity.get("workerinput", {}).get("randomly_seed")
    if seed is not None and not hasattr(config, "workerinput"):
        config.option.randomly_seed = seed


def seed_from_identity(config, identity: dict) -> None:
    """A forked worker: pytest-randomly reseeds before each test from the option its
    configure set in the collector; the identity's seed (a replayed run's) replaces it."""
    seed = identity.get("workerinput", {}).get("randomly_seed")
    if seed is not None and config.pluginmanager.hasplugin("randomly"):
        config.option.randomly_seed = seed
