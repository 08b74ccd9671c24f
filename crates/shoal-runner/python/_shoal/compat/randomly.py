"""pytest-randomly (written against 5.1, as in requirements-plugins.txt).

Under xdist, pytest-randomly's controller puts its seed in each worker's ``workerinput``
(``randomly_seed``), and a worker shuffles its collection and reseeds ``random`` with it, so
every worker orders the tests as the controller did. shoal's collector does the same. A
spawned ``-n 0`` worker has no ``workerinput`` (it must look like plain pytest), so there the
seed is set as ``--randomly-seed`` would set it. A forked worker configured in the collector,
with the collector's seed; it takes its identity's instead, which differs only in a replay of a
recorded run (``shoal replay``, ``shoal bisect``), whose seed the record gives.

shoal's ``--shuffle`` orders the units with pytest-randomly's seed, so that one seed orders
both the tests (pytest-randomly, in the collection every worker shares) and the units (shoal,
which hands them out); ``--shuffle=SEED`` hands its seed to pytest-randomly through
``SHOAL_SHUFFLE_SEED`` in the collector's environment, unless ``--randomly-seed`` was given.
"""

from __future__ import annotations

import os


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


def take_shuffle_seed(config) -> None:
    """In the collector, before pytest-randomly's ``pytest_configure`` draws a seed: shoal's
    ``--shuffle=SEED`` is its seed too, unless ``--randomly-seed`` was given (the controller
    then refuses seeds that differ). Taken out of the environment, which tests must not see."""
    seed = os.environ.pop("SHOAL_SHUFFLE_SEED", None)
    if seed is None or not config.pluginmanager.hasplugin("randomly"):
        return
    if config.option.randomly_seed == "default":
        config.option.randomly_seed = int(seed)


def seed(config) -> int | None:
    """pytest-randomly's seed, once it configured, where it is active."""
    if not config.pluginmanager.hasplugin("randomly"):
        return None
    return config.getoption("randomly_seed")


def seed_from_identity(config, identity: dict) -> None:
    """A forked worker: pytest-randomly reseeds before each test from the option its
    configure set in the collector; the identity's seed (a replayed run's) replaces it."""
    seed = identity.get("workerinput", {}).get("randomly_seed")
    if seed is not None and config.pluginmanager.hasplugin("randomly"):
        config.option.randomly_seed = seed
