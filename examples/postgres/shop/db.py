"""Where the database is, and how its schema is made."""

from __future__ import annotations

import os

from sqlalchemy import URL, Engine, create_engine, make_url, text

from shop.models import Base

# Any constant works: it names the lock that serialises concurrent migrations of one database.
_MIGRATION_LOCK = 7_321_004


def database_url() -> URL:
    """The database the application talks to.

    ``DATABASE_URL`` (``postgresql://user:password@host:port/dbname``) wins; otherwise libpq's
    variables ``PGHOST``, ``PGPORT``, ``PGUSER``, ``PGPASSWORD`` and ``PGDATABASE``, with
    libpq's defaults (``localhost``, ``5432``, ``postgres``, no password, ``postgres``).
    """
    raw = os.environ.get("DATABASE_URL")
    if raw:
        url = make_url(raw)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        return url
    return URL.create(
        "postgresql+psycopg",
        username=os.environ.get("PGUSER", "postgres"),
        password=os.environ.get("PGPASSWORD") or None,
        host=os.environ.get("PGHOST", "localhost"),
        port=int(os.environ.get("PGPORT", "5432")),
        database=os.environ.get("PGDATABASE", "postgres"),
    )


def make_engine(url: URL | None = None, **kwargs) -> Engine:
    return create_engine(url or database_url(), **kwargs)


def migrate(engine: Engine) -> None:
    """Bring the schema up to date. Safe to run from several processes at once: a
    transaction-level advisory lock makes concurrent migrations of one database take turns."""
    with engine.begin() as connection:
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        Base.metadata.create_all(connection)
