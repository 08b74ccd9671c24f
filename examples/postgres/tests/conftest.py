"""Database fixtures for running this suite in parallel (shoal -n N, or pytest -n N with
pytest-xdist). Three ways to keep parallel tests from stepping on each other:

(a) one database per worker      -> ``worker_engine`` and ``db``       (test_per_worker_db.py)
(b) a transaction per test, rolled back afterwards
                                  -> ``rollback_session``             (test_rollback.py)
(c) one shared database, and data that no other test can collide with
                                  -> ``shared_engine`` and ``shared_session`` (test_unique_data.py)

The server comes from ``DATABASE_URL`` or libpq's ``PG*`` variables (see ``shop.db``).
"""

import os

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from shop.db import database_url, make_engine, migrate
from shop.models import Base


def _admin_engine():
    """A connection to the configured database, in autocommit mode: CREATE DATABASE and DROP
    DATABASE cannot run inside a transaction."""
    engine = make_engine(isolation_level="AUTOCOMMIT")
    try:
        with engine.connect():
            pass
    except OperationalError as e:
        engine.dispose()
        pytest.fail(
            f"cannot reach PostgreSQL at {database_url().render_as_string(hide_password=True)}: "
            f"{e.orig}\nSet DATABASE_URL (or PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE).",
            pytrace=False,
        )
    return engine


# -- (a) one database per worker ---------------------------------------------------------------


@pytest.fixture(scope="session")
def worker_engine():
    """An engine on ``test_db_<worker>``: a database of this worker's own, made and migrated
    when the worker first needs it and dropped when the worker's session ends.

    pytest-xdist and shoal name each worker in ``PYTEST_XDIST_WORKER`` (gw0, gw1, ...); a run
    that is not distributed (plain pytest, ``-n 0``) has no such variable and is "master".
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "master")
    name = f"test_db_{worker}"
    admin = _admin_engine()
    with admin.connect() as connection:
        # What a killed run may have left behind (PostgreSQL 13+ for FORCE).
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(database_url().set(database=name))
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()  # close the pool's connections, or DROP DATABASE would wait on them
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}"'))
        admin.dispose()


@pytest.fixture
def db(worker_engine):
    """A Session on this worker's database. Tests may commit; every table is emptied after
    each test, so the next test on this worker starts from an empty database."""
    session = Session(worker_engine)
    try:
        yield session
    finally:
        session.close()
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        with worker_engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


# -- (b) a transaction per test, rolled back afterwards ----------------------------------------


@pytest.fixture
def rollback_session(worker_engine):
    """A Session inside a transaction that is rolled back after the test, whatever it did.

    The test may call ``session.commit()`` and ``session.rollback()`` as the application
    does: with ``join_transaction_mode="create_savepoint"`` they work on savepoints inside the
    outer transaction, which only this fixture ends. Nothing a test writes is ever committed,
    so the database is as empty after the test as before it.
    """
    with worker_engine.connect() as connection:
        transaction = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()
            transaction.rollback()


# -- (c) one shared database, unique data --------------------------------------------------------


@pytest.fixture(scope="session")
def shared_engine():
    """An engine on the configured database itself, shared by every worker (and by runs before
    this one). Migrating it from several workers at once is safe: ``migrate`` serialises on an
    advisory lock. Tests using it must only ever look at rows they made themselves."""
    _admin_engine().dispose()  # a clear failure when the server is unreachable
    engine = make_engine()
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def shared_session(shared_engine):
    """A plain Session on the shared database: what a test commits stays there."""
    with Session(shared_engine) as session:
        yield session
