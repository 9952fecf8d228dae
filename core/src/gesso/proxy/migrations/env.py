"""Alembic's environment for the proxy's database: async drivers, and a lock so replicas starting together
migrate one at a time (on PostgreSQL an advisory lock; on SQLite a lock on a file beside the database)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import sqlalchemy as sa
from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from gesso.proxy.store import async_url, metadata

#: any constant: the advisory lock every gesso replica takes while it migrates
LOCK_ID = 4_702_170_311


def _migrate(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


@contextlib.contextmanager
def _sqlite_lock(url: str) -> Iterator[None]:
    """An exclusive lock on ``<database>-migrate``, beside a SQLite database's file (as its ``-wal`` and ``-shm``
    are), for as long as it is held."""
    path = url.split(":///", 1)[1] if ":///" in url else ""
    try:
        import fcntl
    except ImportError:  # (not on Windows: replicas there start one at a time)
        fcntl = None  # type: ignore[assignment]
    if not path or path.startswith(":memory:") or fcntl is None:
        yield
        return
    with open(path + "-migrate", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


async def _run(url: str) -> None:
    engine = create_async_engine(async_url(url))
    postgres = engine.dialect.name == "postgresql"
    try:
        async with engine.connect() as conn:
            if postgres:
                await conn.execute(sa.text(f"SELECT pg_advisory_lock({LOCK_ID})"))
                await conn.commit()
            try:
                await conn.run_sync(_migrate)
                await conn.commit()
            finally:
                if postgres:
                    await conn.execute(sa.text(f"SELECT pg_advisory_unlock({LOCK_ID})"))
                    await conn.commit()
    finally:
        await engine.dispose()


_url = context.config.get_main_option("sqlalchemy.url")
if _url is None:
    raise RuntimeError("the migrations need sqlalchemy.url: run them with gesso.proxy.store.upgrade (gesso db upgrade)")
with _sqlite_lock(_url) if _url.startswith("sqlite") else contextlib.nullcontext():
    asyncio.run(_run(_url))
